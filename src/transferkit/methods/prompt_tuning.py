"""Prompt tuning (Lester et al. 2021) through peft: a few trainable virtual-token embeddings prepended to the
input of a frozen encoder; the task head trains too. Nothing to merge into the weights: the run folder's
model/ holds no weights (so a plain pipeline cannot silently predict without the prompt) and
`transferkit predict` loads the base checkpoint with adapter/.

Text classification only: peft 0.21's question-answering model fails with prompt tuning ("too many values
to unpack"), its token-classification model returns scores for the virtual tokens too, and the relation
head reads entity-marker positions that the prompt would shift."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from transferkit.methods.base import MethodConfig
from transferkit.methods.peft_common import PEFT_METHODS, PeftMethod


class PromptTuningConfig(MethodConfig):
    method: ClassVar[str] = "prompt_tuning"
    summary: ClassVar[str] = "trainable virtual-token embeddings before the input of a frozen encoder (peft)"
    conflicts: ClassVar[tuple[str, ...]] = tuple(m for m in PEFT_METHODS if m != "prompt_tuning")
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)

    tokens: int = Field(20, ge=1, le=512, description="Number of virtual tokens.")
    init: Literal["random", "text"] = Field("random", description="Start from random embeddings or from the "
                                            "embeddings of init_text's tokens.")
    init_text: str | None = Field(None, validate_default=True, description="With init: text, e.g. 'Is this review "
                                  "positive or negative?'.")

    @field_validator("init_text")
    @classmethod
    def _text(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("init") == "text" and not (v or "").strip():
            raise ValueError("init: text needs init_text (the words whose embeddings start the prompt)")
        return v


class PromptTuning(PeftMethod):
    Config = PromptTuningConfig
    mergeable = False

    def peft_config(self, model: Any, task: Any, head: list[str]) -> Any:
        from peft import PromptTuningConfig as PeftPromptTuningConfig
        from peft import PromptTuningInit, TaskType

        from transferkit.errors import ConfigError

        cfg: PromptTuningConfig = self.cfg  # type: ignore[assignment]
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and getattr(task, "max_length", 0) + cfg.tokens > positions:
            raise ConfigError([f"methods -> prompt_tuning -> tokens: {cfg.tokens} virtual tokens + model.max_length "
                               f"{task.max_length} exceed the model's {positions} positions; lower one of them"])
        kw: dict[str, Any] = {}
        if cfg.init == "text":
            kw = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": cfg.init_text,
                  "tokenizer_name_or_path": model.config._name_or_path}
        return PeftPromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=cfg.tokens,
                                      modules_to_save=head, **kw)
