"""Label smoothing (Szegedy et al. 2016): the gold class's target is 1 - s, the rest of s spread evenly."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import OPTIM, Method, MethodConfig
from transferkit.methods.losses import CLASS_LOGIT_TASKS, LossSpec, single_label_check


class LabelSmoothingConfig(MethodConfig):
    method: ClassVar[str] = "label_smoothing"
    summary: ClassVar[str] = "soft targets: 1 - smoothing on the gold class, the rest spread over all classes"
    tasks: ClassVar[tuple[str, ...]] = CLASS_LOGIT_TASKS

    smoothing: float = Field(0.1, gt=0.0, lt=1.0, description="Probability mass taken from the gold class.")

    def cross_checks(self, run: Any) -> list[str]:
        return single_label_check(self.method, run)


class LabelSmoothing(Method):
    Config = LabelSmoothingConfig
    order = OPTIM

    def configure_loss(self, spec: LossSpec, *, class_counts: list[int], labels: list[str]) -> LossSpec:
        spec.smoothing = float(self.cfg.smoothing)  # type: ignore[attr-defined]
        return spec
