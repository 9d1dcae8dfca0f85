"""LoRA (Hu et al. 2021) through peft: low-rank adapters on the encoder's Linear layers, the task head
trained in full and saved with the adapter (see peft_common.py for what the run folder gets)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import MethodConfig
from transferkit.methods.peft_common import PEFT_METHODS, PeftMethod, check_targets, encoder_linear_names


class LoRAConfig(MethodConfig):
    method: ClassVar[str] = "lora"
    summary: ClassVar[str] = "low-rank adapters (peft) on the encoder; the head is trained in full"
    conflicts: ClassVar[tuple[str, ...]] = tuple(m for m in PEFT_METHODS if m != "lora")

    r: int = Field(8, ge=1, le=1024, description="Rank of the adapters.")
    alpha: float = Field(16.0, gt=0, description="Scaling: the adapter's update is multiplied by alpha / r.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["query", "value"], description="Linear layers that get adapters, by name suffix (BERT: query, key, value, "
        "dense), or 'all-linear' for every Linear layer of the encoder.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")


def lora_targets(method: str, model: Any, target_modules: Any) -> list[str]:
    if target_modules == "all-linear":
        return encoder_linear_names(model)
    targets = list(target_modules)
    check_targets(method, model, targets)
    return targets


class LoRA(PeftMethod):
    Config = LoRAConfig

    def peft_config(self, model: Any, task: Any, head: list[str]) -> Any:
        from peft import LoraConfig

        cfg: LoRAConfig = self.cfg  # type: ignore[assignment]
        alpha: Any = cfg.alpha  # peft annotates an int; a float scale works the same
        extra: dict[str, Any] = {}
        if self._new_tokens:  # tokens the task added (relation markers) train as rows of the embedding
            extra["trainable_token_indices"] = {"word_embeddings": self._new_tokens}
        return LoraConfig(r=cfg.r, lora_alpha=alpha, lora_dropout=cfg.dropout,
                          target_modules=lora_targets(self.name, model, cfg.target_modules), bias=cfg.bias,
                          modules_to_save=head, **extra)
