"""Class weights for imbalanced data: each example's loss weighted by its class's weight, inverse frequency
(N / (C n_c), scikit-learn's 'balanced') computed on the training split, or given per label."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import OPTIM, Method
from transferkit.methods.losses import LossMethodConfig, LossSpec, inverse_frequency, single_label_check

log = logging.getLogger(__name__)


class ClassWeightsConfig(LossMethodConfig):
    method: ClassVar[str] = "class_weights"
    summary: ClassVar[str] = "weight each example's loss by its class (inverse frequency or given)"
    weights: Literal["inverse_frequency"] | dict[str, float] = Field(
        "inverse_frequency", description="'inverse_frequency' (from the training split), or a weight per label, "
        "e.g. {positive: 4.0, negative: 1.0} (labels not listed get 1.0).")

    def cross_checks(self, run: Any) -> list[str]:
        problems = single_label_check(self.method, run)
        if isinstance(self.weights, dict):
            bad = {k: v for k, v in self.weights.items() if v < 0}
            if bad:
                problems.append(f"methods -> class_weights -> weights: weights must be >= 0, got {bad}")
            known = run.task.labels if run.task.type != "token_classification" else None  # NER: types, not tags
            unknown = unknown_labels(self.weights, known)
            if unknown:
                problems.append(f"methods -> class_weights -> weights: {unknown} are not among task.labels {known}")
        return problems


def unknown_labels(weights: Any, labels: list[str] | None) -> list[str]:
    """Labels named in given weights that are not among `labels` (none when either is not known yet)."""
    if not isinstance(weights, dict) or not labels:
        return []
    return sorted(set(weights) - set(labels))


class ClassWeights(Method):
    Config = ClassWeightsConfig
    order = OPTIM

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        """Given weights name labels: checked against the task's labels before the run folder exists."""
        cfg: ClassWeightsConfig = self.cfg  # type: ignore[assignment]
        names = list(getattr(task, "labels", []) or [])
        unknown = unknown_labels(cfg.weights, names)
        if unknown:
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> class_weights -> weights: {unknown} are not labels of the training "
                               f"data ({', '.join(names)})"])
        return model

    def configure_loss(self, spec: LossSpec, *, class_counts: list[int], labels: list[str]) -> LossSpec:
        cfg: ClassWeightsConfig = self.cfg  # type: ignore[assignment]
        if cfg.weights == "inverse_frequency":
            spec.weight = inverse_frequency(class_counts)
        else:
            spec.weight = [float(cfg.weights.get(n, 1.0)) for n in labels]
        log.info("class weights: %s", ", ".join(f"{n}={w:.3g}" for n, w in zip(labels, spec.weight)))
        return spec
