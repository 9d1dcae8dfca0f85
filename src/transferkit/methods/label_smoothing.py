"""Label smoothing (Szegedy et al. 2016): the gold class's target is 1 - s, the rest of s spread evenly."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from transferkit.methods.base import OPTIM, Method
from transferkit.methods.losses import LossMethodConfig, LossSpec


class LabelSmoothingConfig(LossMethodConfig):
    method: ClassVar[str] = "label_smoothing"
    summary: ClassVar[str] = "soft targets: 1 - smoothing on the gold class, the rest spread over all classes"

    smoothing: float = Field(0.1, gt=0.0, lt=1.0, description="Probability mass taken from the gold class.")


class LabelSmoothing(Method):
    Config = LabelSmoothingConfig
    order = OPTIM

    def configure_loss(self, spec: LossSpec, *, class_counts: list[int], labels: list[str]) -> LossSpec:
        spec.smoothing = float(self.cfg.smoothing)  # type: ignore[attr-defined]
        return spec
