"""Inference over an encoded split: length-sorted batches, no padding waste, results in input order.

Scores are per feature. Sequence-level tasks give one fixed-width row per feature (stacked into an
array); token-level tasks (`task.token_level`) give one row per token, trimmed to the feature's length
(a list of arrays of different lengths). `task.postprocess` then turns feature scores into one
prediction per example (merging sliding windows, decoding answer spans)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from transferkit.tasks.base import Encoded, Task


def eval_batches(lengths: list[int] | np.ndarray, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Length-sorted batches for inference (no repetition: each process takes a disjoint share)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    return batches[rank::world]


#: what infer runs: a model the task drives (task.forward), or a runner that maps a collated batch to the
#: task's outputs directly (an ONNX Runtime session, deploy/onnx.py)
Runnable = Union[nn.Module, Callable[[dict[str, torch.Tensor]], torch.Tensor]]


@torch.inference_mode()
def infer(task: Task, model: Runnable, encoded: Encoded, *, device: torch.device | str = "cpu",
          batch_size: int = 64, accelerator: Any = None,
          validation: bool = False) -> tuple[np.ndarray | list[np.ndarray], float | None]:
    """Scores for every example (in input order) and the mean loss when labels are present.

    `validation`: the training loop's evaluation, passed on to a generating task (which may skip generating
    when its validation metric is a loss).

    With an accelerator of several processes, each process scores a disjoint share and the shares are
    gathered, so every process returns the full result.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    module = model if isinstance(model, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    idx_out: list[int] = []
    score_out: list[np.ndarray] = []  # one entry per feature
    token_level = getattr(task, "token_level", False)
    generate = getattr(task, "generate", None)  # text generation: the scores are the generated token ids
    if generate is not None and module is None:
        raise TypeError(f"{task.name} generates text: infer needs the torch model, not a runner")
    loss_sum, n_loss = 0.0, 0
    # a task may sort by other lengths than its features' (a dialogue's prompts, which generation groups by)
    for batch_idx in eval_batches(encoded.meta.get("sort_lengths", encoded.lengths), batch_size, rank, world):
        batch = task.collate([encoded.features[i] for i in batch_idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        if generate is None or "labels" in batch:
            outputs = task.forward(module, batch) if module is not None else model(batch)  # type: ignore[operator]
        if "labels" in batch:
            loss_sum += float(task.loss(outputs, batch)) * len(batch_idx)
            n_loss += len(batch_idx)
        if generate is not None:
            score_out.extend(generate(module, batch, outputs if "labels" in batch else None, validation=validation))
            idx_out.extend(batch_idx)
            continue
        scores = task.scores(outputs).cpu().numpy()
        if token_level:
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            score_out.extend(row[:k] for row, k in zip(scores, lengths))
        else:
            score_out.extend(scores)
        idx_out.extend(batch_idx)
    if module is not None:
        module.train(was_training)
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object([(idx_out, score_out, loss_sum, n_loss)])
        idx_out = [i for p in parts for i in p[0]]
        score_out = [s for p in parts for s in p[1]]
        loss_sum, n_loss = sum(p[2] for p in parts), sum(p[3] for p in parts)
    ordered: list[np.ndarray] = [None] * len(score_out)  # type: ignore[list-item]
    for i, row in zip(idx_out, score_out):
        ordered[i] = row
    if token_level or generate is not None:
        return ordered, (loss_sum / n_loss if n_loss else None)
    return (np.stack(ordered) if ordered else np.zeros((0,))), (loss_sum / n_loss if n_loss else None)


def predictions(task: Task, encoded: Encoded, scores: Any) -> Any:
    """Per-example predictions from per-feature scores (identity for one feature per example)."""
    post = getattr(task, "postprocess", None)
    return post(scores, encoded) if post else scores


def evaluate(task: Task, model: Runnable, encoded: Encoded, **kw: Any) -> tuple[dict[str, Any], Any]:
    """Metrics of the model on `encoded` (with its loss when labelled) and the per-example predictions."""
    scores, loss = infer(task, model, encoded, **kw)
    scores = predictions(task, encoded, scores)
    metrics = task.metrics(scores, task.gold(encoded))
    if loss is not None:
        metrics["loss"] = loss
    return metrics, scores
