"""Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p)^gamma, so confident, easy examples (mostly
of the majority class) count less; `alpha` optionally weights classes as class_weights does."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import OPTIM, Method
from transferkit.methods.losses import LossMethodConfig, LossSpec, inverse_frequency


class FocalLossConfig(LossMethodConfig):
    method: ClassVar[str] = "focal_loss"
    summary: ClassVar[str] = "focal loss: cross-entropy scaled by (1 - p)^gamma, easy examples count less"
    conflicts: ClassVar[tuple[str, ...]] = ("class_weights",)  # alpha is focal loss's own class weighting

    gamma: float = Field(2.0, ge=0.0, le=10.0, description="Focusing parameter (0: plain cross-entropy).")
    alpha: Literal["none", "inverse_frequency"] = Field(
        "none", description="Class weighting inside the focal loss: none, or inverse frequency on the training split.")


class FocalLoss(Method):
    Config = FocalLossConfig
    order = OPTIM

    def configure_loss(self, spec: LossSpec, *, class_counts: list[int], labels: list[str]) -> LossSpec:
        cfg: FocalLossConfig = self.cfg  # type: ignore[assignment]
        spec.gamma = cfg.gamma
        if cfg.alpha == "inverse_frequency":
            spec.weight = inverse_frequency(class_counts)
        return spec
