"""The classification loss the loss methods configure together (not a method itself): cross-entropy over
class logits with optional class weights (class_weights, focal_loss's alpha), a focusing term (focal_loss)
and label smoothing (label_smoothing), for any task whose outputs are class logits `(..., C)` with integer
labels, -100 ignored (sequence classification, relations, token classification).

    loss_i = (1 - p_i)^gamma * [ -(1 - s) log p_i - (s / C) sum_c log p_ic ]        (p_i: prob. of the gold class)
    loss   = sum_i w_{y_i} loss_i / sum_i w_{y_i}                                    (w = 1 without weights)

With s = 0 and gamma = 0 this is exactly torch's `cross_entropy(logits, labels, weight=w)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from transferkit.methods.base import MethodConfig

#: tasks whose outputs are class logits with integer labels
CLASS_LOGIT_TASKS = ("text_classification", "relation_extraction", "token_classification")


@dataclass
class LossSpec:
    weight: list[float] | None = None  # per class, in task.labels order
    gamma: float = 0.0
    smoothing: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {"class_weights": self.weight, "focal_gamma": self.gamma, "label_smoothing": self.smoothing}


def spec_loss(logits: Any, labels: Any, spec: LossSpec) -> Any:
    import torch

    n_classes = logits.shape[-1]
    logits = logits.float().reshape(-1, n_classes)
    labels = labels.reshape(-1)
    keep = labels != -100
    logits, labels = logits[keep], labels[keep]
    logp = torch.log_softmax(logits, dim=-1)
    gold = logp.gather(1, labels[:, None]).squeeze(1)
    loss = -(1.0 - spec.smoothing) * gold
    if spec.smoothing:
        loss = loss - spec.smoothing / n_classes * logp.sum(dim=-1)
    if spec.gamma:
        # 1 - p as -expm1(log p), floored: the gradient of x^gamma (gamma < 1) is infinite at x = 0
        loss = loss * (-torch.expm1(gold)).clamp_min(1e-6) ** spec.gamma
    if spec.weight is None:
        return loss.mean() if len(loss) else logits.sum() * 0.0
    w = torch.as_tensor(spec.weight, dtype=loss.dtype, device=loss.device)[labels]
    return (w * loss).sum() / w.sum().clamp_min(1e-12)


def class_counts(features: list[dict[str, Any]], n_classes: int) -> list[int]:
    """How often each class index occurs among the training labels (tokens for token classification)."""
    import numpy as np

    flat: list[int] = []
    for f in features:
        y = f.get("labels")
        if isinstance(y, list):
            flat.extend(v for v in y if v != -100)
        elif y is not None:
            flat.append(int(y))
    return np.bincount(np.asarray(flat, dtype=np.int64), minlength=n_classes).tolist()


def inverse_frequency(counts: list[int]) -> list[float]:
    """w_c = N / (C * n_c) (scikit-learn's 'balanced'); a class absent from training gets weight 0."""
    total, c = sum(counts), len(counts)
    return [total / (c * n) if n else 0.0 for n in counts]


class LossMethodConfig(MethodConfig):
    """What the loss methods' sections share: the tasks with class logits, single-label only."""

    tasks: ClassVar[tuple[str, ...]] = CLASS_LOGIT_TASKS

    def cross_checks(self, run: Any) -> list[str]:
        return single_label_check(self.method, run)


def single_label_check(method: str, run: Any) -> list[str]:
    if run.task.type == "text_classification" and run.task.multilabel:
        return [f"methods -> {method}: works for single-label classification; with task.multilabel each label is "
                "its own yes/no decision"]
    return []
