"""IA3 (Liu et al. 2022) through peft: learned vectors that rescale the keys, values and feed-forward
activations; the fewest trainable parameters of the adapters here. Merges into the weights."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import MethodConfig
from transferkit.methods.peft_common import PEFT_METHODS, PeftMethod, check_targets


class IA3Config(MethodConfig):
    method: ClassVar[str] = "ia3"
    summary: ClassVar[str] = "IA3: learned rescaling vectors on keys, values and feed-forward layers (peft)"
    conflicts: ClassVar[tuple[str, ...]] = tuple(m for m in PEFT_METHODS if m != "ia3")

    target_modules: list[str] | Literal["default"] = Field(
        "default", description="Linear layers whose outputs (or, for feed-forward layers, inputs) are rescaled, by "
        "name suffix; 'default' takes peft's choice for the architecture (BERT: key, value, output.dense).")
    feedforward_modules: list[str] | Literal["default"] = Field(
        "default", description="Which of target_modules are feed-forward layers (rescaled on their input); "
        "'default' takes peft's choice.")


class IA3(PeftMethod):
    Config = IA3Config

    def peft_config(self, model: Any, task: Any, head: list[str]) -> Any:
        from peft import IA3Config as PeftIA3Config

        from transferkit.errors import ConfigError

        cfg: IA3Config = self.cfg  # type: ignore[assignment]
        kw: dict[str, Any] = {}
        if cfg.target_modules != "default":
            check_targets(self.name, model, list(cfg.target_modules))
            kw["target_modules"] = list(cfg.target_modules)
        if cfg.feedforward_modules != "default":
            if cfg.target_modules == "default":
                raise ConfigError(["methods -> ia3 -> feedforward_modules: give target_modules too (the "
                                   "feed-forward layers must be among them)"])
            extra = [m for m in cfg.feedforward_modules if m not in cfg.target_modules]
            if extra:
                raise ConfigError([f"methods -> ia3 -> feedforward_modules: {extra} are not in target_modules "
                                   f"{list(cfg.target_modules)}"])
            kw["feedforward_modules"] = list(cfg.feedforward_modules)
        elif cfg.target_modules != "default":
            kw["feedforward_modules"] = []
        if self._new_tokens:
            raise ConfigError([f"methods -> ia3: the task added {len(self._new_tokens)} tokens to the vocabulary (entity "
                               "markers) whose embeddings must train, and peft's IA3 cannot train embedding rows; "
                               "use lora or adalora (they train them as trainable tokens)"])
        try:
            return PeftIA3Config(modules_to_save=head, **kw)
        except ValueError as e:
            raise ConfigError([f"methods -> ia3: {e}"]) from None
