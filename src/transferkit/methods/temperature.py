"""Temperature scaling (Guo et al. 2017): after training, one scalar T that divides the logits is fitted on the
validation split by minimising its negative log-likelihood. The argmax never changes, so accuracy does not
either; the probabilities become honest (a 0.9 means right about 9 times in 10). T is saved in the model's
task.json, so the test metrics, `predict`, `pipeline`-free serving and the service all apply it; the report
shows the expected calibration error and the reliability diagram before and after.

It runs before threshold tuning (a threshold is chosen on the calibrated probabilities)."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import EVENTS, Method, MethodConfig

log = logging.getLogger(__name__)


class TemperatureScalingConfig(MethodConfig):
    method: ClassVar[str] = "temperature_scaling"
    summary: ClassVar[str] = "calibrate the class probabilities: one temperature fitted on the validation split"
    tasks: ClassVar[tuple[str, ...]] = ("text_classification", "relation_extraction")

    min_temperature: float = Field(0.05, gt=0, description="Lower bound of the fitted temperature.")
    max_temperature: float = Field(20.0, gt=0, description="Upper bound of the fitted temperature.")

    def cross_checks(self, run: Any) -> list[str]:
        problems = []
        if run.task.type == "text_classification" and run.task.multilabel:
            problems.append("methods -> temperature_scaling: for single-label tasks (a multilabel task's "
                            "independent sigmoids are not one softmax to scale)")
        if self.min_temperature >= self.max_temperature:
            problems.append(f"methods -> temperature_scaling: min_temperature ({self.min_temperature}) must be "
                            f"below max_temperature ({self.max_temperature})")
        return problems


class TemperatureScaling(Method):
    Config = TemperatureScalingConfig
    order = EVENTS - 1  # before threshold tuning

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.fitted: dict[str, float] = {}

    def after_training(self, *, model: Any, task: Any, val: Any, infer: Any, train: Any = None) -> None:
        import numpy as np

        from transferkit.evaluation.calibration import ece, fit_temperature, nll, rescale

        if len(val) == 0:
            log.warning("temperature scaling: no validation examples, the temperature stays %g", task.temperature)
            return
        probs = np.asarray(infer(model, val))  # at the task's current temperature
        gold = task.gold(val)
        factor = fit_temperature(probs, gold, low=self.cfg.min_temperature / task.temperature,  # type: ignore[attr-defined]
                                 high=self.cfg.max_temperature / task.temperature)  # type: ignore[attr-defined]
        after = rescale(probs, factor)
        previous = task.temperature
        task.temperature = float(previous * factor)
        self.fitted = {"temperature": task.temperature, "validation_ece_before": ece(probs, gold),
                       "validation_ece_after": ece(after, gold), "validation_nll_before": nll(probs, gold),
                       "validation_nll_after": nll(after, gold)}
        log.info("temperature scaling: T = %.3f (validation ECE %.4f -> %.4f, NLL %.4f -> %.4f)", task.temperature,
                 self.fitted["validation_ece_before"], self.fitted["validation_ece_after"],
                 self.fitted["validation_nll_before"], self.fitted["validation_nll_after"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.fitted}
