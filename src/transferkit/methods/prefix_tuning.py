"""Prefix tuning (Li & Liang 2021) through peft, where the model supports it. peft 0.21.2 passes the prefix
as `past_key_values`, which the BERT-family encoders of transformers 5 no longer take, so on them it fails
with "Model does not support past key values which are required for prefix tuning". That is found here with
one forward pass on a dummy batch while the model is prepared, before the run folder exists, and reported
as a config error (never a traceback mid-run); on a model that takes the prefix it trains as usual."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import MethodConfig
from transferkit.methods.peft_common import PEFT_METHODS, PeftMethod

TASK_TYPES = {"text_classification": "SEQ_CLS"}


class PrefixTuningConfig(MethodConfig):
    method: ClassVar[str] = "prefix_tuning"
    summary: ClassVar[str] = "trainable key/value prefixes in every attention layer (peft; not on BERT models)"
    conflicts: ClassVar[tuple[str, ...]] = tuple(m for m in PEFT_METHODS if m != "prefix_tuning")
    tasks: ClassVar[tuple[str, ...]] = tuple(TASK_TYPES)

    tokens: int = Field(20, ge=1, le=512, description="Prefix length (virtual tokens per layer).")


class PrefixTuning(PeftMethod):
    Config = PrefixTuningConfig
    mergeable = False

    def peft_config(self, model: Any, task: Any, head: list[str]) -> Any:
        from peft import PrefixTuningConfig as PeftPrefixTuningConfig

        return PeftPrefixTuningConfig(task_type=TASK_TYPES[task.name], num_virtual_tokens=self.cfg.tokens,  # type: ignore[attr-defined]
                                      modules_to_save=head)

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        import torch

        from transferkit.errors import ConfigError

        wrapped = super().prepare_model(model, task=task)
        probe = {"input_ids": torch.ones((1, 2), dtype=torch.long), "attention_mask": torch.ones((1, 2), dtype=torch.long)}
        try:
            with torch.no_grad():
                wrapped(**probe)
        except ValueError as e:
            model_type = getattr(model.config, "model_type", "?")
            raise ConfigError([f"methods -> prefix_tuning: {e} (peft {_version('peft')} on this '{model_type}' "
                               f"model with transformers {_version('transformers')}: peft passes the prefix as "
                               "past_key_values, which this encoder does not take). Use prompt_tuning, lora or "
                               "ia3 instead."]) from None
        return wrapped


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)
