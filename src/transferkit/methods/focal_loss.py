"""Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p)^gamma, so confident, easy examples (mostly
of the majority class) count less; `alpha` optionally weights classes as class_weights does."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import OPTIM, Method, MethodConfig
from transferkit.methods.losses import CLASS_LOGIT_TASKS, LossSpec, inverse_frequency, single_label_check


class FocalLossConfig(MethodConfig):
    method: ClassVar[str] = "focal_loss"
    summary: ClassVar[str] = "focal loss: cross-entropy scaled by (1 - p)^gamma, easy examples count less"
    tasks: ClassVar[tuple[str, ...]] = CLASS_LOGIT_TASKS
    conflicts: ClassVar[tuple[str, ...]] = ("class_weights",)  # alpha is focal loss's own class weighting

    gamma: float = Field(2.0, ge=0.0, le=10.0, description="Focusing parameter (0: plain cross-entropy).")
    alpha: Literal["none", "inverse_frequency"] = Field(
        "none", description="Class weighting inside the focal loss: none, or inverse frequency on the training split.")

    def cross_checks(self, run: Any) -> list[str]:
        return single_label_check(self.method, run)


class FocalLoss(Method):
    Config = FocalLossConfig
    order = OPTIM

    def configure_loss(self, spec: LossSpec, *, class_counts: list[int], labels: list[str]) -> LossSpec:
        cfg: FocalLossConfig = self.cfg  # type: ignore[assignment]
        spec.gamma = cfg.gamma
        if cfg.alpha == "inverse_frequency":
            spec.weight = inverse_frequency(class_counts)
        return spec
