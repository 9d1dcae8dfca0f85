"""What the transfer bought: baselines measured on the same test split as the fine-tuned model.

- majority: always predict the most frequent training label.
- linear probe: logistic regression on frozen, mean-pooled features of the pretrained encoder
  (what the pretrained weights give with no fine-tuning at all).
- scratch (in the recipe): the same architecture trained from random init on the same data and budget.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from transferkit.modeling.heads import mean_pool
from transferkit.tasks.base import Encoded, Task
from transferkit.evaluation.evaluate import eval_batches


def majority_baseline(task: Task, train: Encoded, test: Encoded) -> dict[str, Any]:
    """The most frequent training label (multilabel: each label's majority value); a task may define its
    own `majority_scores` (relations: the most frequent label of each entity-type pair)."""
    gold_train = task.gold(train)
    gold_test = task.gold(test)
    if hasattr(task, "majority_scores"):
        return task.metrics(task.majority_scores(train, test), gold_test)
    if gold_train.ndim == 2:  # multilabel: predict each label's majority value
        scores = np.tile((gold_train.mean(axis=0) >= 0.5).astype(float), (len(test), 1))
    else:
        top = Counter(gold_train.tolist()).most_common(1)[0][0]
        n_labels: int = len(task.labels)  # type: ignore[attr-defined]
        scores = np.zeros((len(test), n_labels))
        scores[:, top] = 1.0
    return task.metrics(scores, gold_test)


@torch.inference_mode()
def encoder_features(encoder: torch.nn.Module, task: Task, encoded: Encoded, batch_size: int = 128) -> np.ndarray:
    """Mean-pooled last hidden states, in input order."""
    encoder.eval()
    hidden = int(getattr(encoder, "config").hidden_size)
    out = np.zeros((len(encoded), hidden), dtype=np.float32)
    for idx in eval_batches(encoded.lengths, batch_size):
        batch = task.collate([encoded.features[i] for i in idx])
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = encoder(**inputs).last_hidden_state
        out[idx] = mean_pool(hidden, inputs["attention_mask"]).numpy()
    return out


def linear_probe(encoder: torch.nn.Module, task: Task, train: Encoded, test: Encoded,
                 seed: int = 0) -> dict[str, Any]:
    """`encoder`: the pretrained encoder (e.g. `model.base_model` before fine-tuning); left in eval mode."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x_train = encoder_features(encoder, task, train)
    x_test = encoder_features(encoder, task, test)
    y_train = task.gold(train)
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    if y_train.ndim == 2:
        clf = OneVsRestClassifier(clf)
    model = make_pipeline(StandardScaler(), clf).fit(x_train, y_train)
    proba = model.predict_proba(x_test)
    if y_train.ndim == 1 and proba.shape[1] != len(task.labels):  # type: ignore[attr-defined]  # a class absent from train
        full = np.zeros((len(test), len(task.labels)))  # type: ignore[attr-defined]
        full[:, model.classes_] = proba
        proba = full
    return task.metrics(proba, task.gold(test))
