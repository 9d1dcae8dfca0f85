"""Inference over an encoded split: length-sorted batches, no padding waste, results in input order."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.tasks.base import Encoded, Task
from transferkit.training.batching import eval_batches


@torch.inference_mode()
def infer(task: Task, model: nn.Module, encoded: Encoded, *, device: torch.device | str = "cpu",
          batch_size: int = 64, accelerator: Any = None) -> tuple[np.ndarray, float | None]:
    """Scores for every example (in input order) and the mean loss when labels are present.

    With an accelerator of several processes, each process scores a disjoint share and the shares are
    gathered, so every process returns the full result.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    was_training = model.training
    model.eval()
    idx_out: list[int] = []
    score_out: list[np.ndarray] = []
    loss_sum, n_loss = 0.0, 0
    for batch_idx in eval_batches(encoded.lengths, batch_size, rank, world):
        batch = task.collate([encoded.features[i] for i in batch_idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        outputs = task.forward(model, batch)
        if "labels" in batch:
            loss_sum += float(task.loss(outputs, batch)) * len(batch_idx)
            n_loss += len(batch_idx)
        score_out.append(task.scores(outputs).cpu().numpy())
        idx_out.extend(batch_idx)
    model.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object([(idx_out, score_out, loss_sum, n_loss)])
        idx_out = [i for p in parts for i in p[0]]
        score_out = [s for p in parts for s in p[1]]
        loss_sum, n_loss = sum(p[2] for p in parts), sum(p[3] for p in parts)
    scores = np.concatenate(score_out) if score_out else np.zeros((0,))
    ordered = np.empty_like(scores)
    ordered[np.asarray(idx_out, dtype=int)] = scores
    return ordered, (loss_sum / n_loss if n_loss else None)


def evaluate(task: Task, model: nn.Module, encoded: Encoded, **kw: Any) -> tuple[dict[str, Any], np.ndarray]:
    scores, loss = infer(task, model, encoded, **kw)
    metrics = task.metrics(scores, task.gold(encoded))
    if loss is not None:
        metrics["loss"] = loss
    return metrics, scores
