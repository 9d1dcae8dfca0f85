"""Decision-threshold tuning for binary classification: after training, the probability threshold for the
second label (task.labels[1]) that maximises the chosen metric on the validation split replaces argmax
(0.5). It is saved in the model's task.json, so the test scores, `predict` and `pipeline`-free serving all
apply it; the test split is never looked at when choosing."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import EVENTS, Method, MethodConfig

log = logging.getLogger(__name__)


class ThresholdTuningConfig(MethodConfig):
    method: ClassVar[str] = "threshold_tuning"
    summary: ClassVar[str] = "binary tasks: choose the decision threshold on the validation split"
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)

    metric: Literal["macro_f1", "accuracy", "f1_positive"] = Field(
        "macro_f1", description="What the threshold maximises on validation (f1_positive: F1 of task.labels[1]).")

    def cross_checks(self, run: Any) -> list[str]:
        if run.task.type == "text_classification" and run.task.multilabel:
            return ["methods -> threshold_tuning: for single-label binary tasks (multilabel uses 0.5 per label)"]
        if run.task.labels and len(run.task.labels) != 2:
            return [f"methods -> threshold_tuning: needs exactly 2 labels, task.labels has {len(run.task.labels)}"]
        return []


def best_threshold(p_second: Any, gold: Any, metric: str) -> tuple[float, float]:
    """The threshold (predict labels[1] when its probability >= t) with the best metric; ties: closest to 0.5."""
    import numpy as np

    p = np.asarray(p_second, dtype=float)
    y = np.asarray(gold)
    cuts = np.unique(np.concatenate([np.quantile(p, np.linspace(0, 1, 201)), [0.5]]))
    best = (-1.0, 0.5)
    for t in cuts:
        score = score_at(p, y, metric, float(t))
        if score > best[0] + 1e-12 or (abs(score - best[0]) <= 1e-12 and abs(t - 0.5) < abs(best[1] - 0.5)):
            best = (score, float(t))
    return best[1], best[0]


class ThresholdTuning(Method):
    Config = ThresholdTuningConfig
    order = EVENTS

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.chosen: dict[str, float] = {}

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        labels = list(getattr(task, "labels", []) or [])
        if len(labels) != 2:
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> threshold_tuning: needs a binary task; the training data has "
                               f"{len(labels)} labels ({', '.join(labels[:8])})"])
        return model

    def after_training(self, *, model: Any, task: Any, val: Any, infer: Any, train: Any = None) -> None:
        metric = self.cfg.metric  # type: ignore[attr-defined]
        scores = infer(model, val)
        import numpy as np

        p = np.asarray(scores)[:, 1]
        gold = task.gold(val)
        before = score_at(p, gold, metric, 0.5)
        t, score = best_threshold(p, gold, metric)
        task.threshold = t
        self.chosen = {"threshold": t, f"validation_{metric}": score, f"validation_{metric}_at_0.5": before}
        log.info("threshold tuning: P(%s) >= %.4f (validation %s %.4f, at 0.5: %.4f)", task.labels[1], t, metric,
                 score, before)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.chosen}


def score_at(p: Any, gold: Any, metric: str, t: float) -> float:
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score

    pred = (np.asarray(p) >= t).astype(int)
    if metric == "accuracy":
        return float(accuracy_score(gold, pred))
    if metric == "f1_positive":
        return float(f1_score(gold, pred, pos_label=1, zero_division=0))
    return float(f1_score(gold, pred, average="macro", labels=[0, 1], zero_division=0))
