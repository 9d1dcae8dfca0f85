"""Batches for one epoch: deterministic from (seed, epoch), length-grouped, token-budgeted, sharded.

Length grouping sorts the whole epoch by length with a random tie-break, cuts it into batches of
similar length (so dynamic padding wastes little), then shuffles the order of the batches. Every example
appears exactly once per epoch. With several processes, each global batch is split between them
(`split_batch`), so a DDP step sees the same examples as a single-process step: results do not depend
on the number of processes beyond floating-point reduction order.
"""

from __future__ import annotations

import numpy as np


def _cut(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int | None) -> list[list[int]]:
    batches: list[list[int]] = []
    cur: list[int] = []
    widest = 0
    for i in order.tolist():
        w = max(widest, int(lengths[i]))
        if cur and (len(cur) >= batch_size or (max_tokens is not None and w * (len(cur) + 1) > max_tokens)):
            batches.append(cur)
            cur, w = [], int(lengths[i])
        cur.append(i)
        widest = w
    if cur:
        batches.append(cur)
    return batches


def epoch_batches(lengths: list[int] | np.ndarray, batch_size: int, *, seed: int, epoch: int,
                  strategy: str = "length_grouped", max_tokens: int | None = None) -> list[list[int]]:
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    if strategy == "random":
        return _cut(rng.permutation(len(lengths)), lengths, batch_size, max_tokens)
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = _cut(order, lengths, batch_size, max_tokens)
    perm = rng.permutation(len(batches))
    return [batches[j] for j in perm]


def split_batch(batch: list[int], rank: int, world: int) -> list[int]:
    """This process's share of a global batch (interleaved, so shares have similar lengths). A batch smaller
    than the number of processes is repeated so that no process is left without data (DDP needs every
    process to step)."""
    if world == 1:
        return batch
    if len(batch) < world:
        batch = (batch * world)[:world]
    return batch[rank::world]


def chunk_batch(batch: list[int], lengths, chunk_tokens: int | None, multiple: int = 1) -> list[list[int]]:
    """Split one batch into consecutive chunks of at most `chunk_tokens` padded tokens each (at least one
    example per chunk). The loop runs the chunks one after another and accumulates their gradients into the
    same optimizer step, so the step is unchanged while peak activation memory is bounded. `multiple`: the
    batch is made of groups of that many consecutive examples (contrastive pairs), never split between chunks."""
    if not chunk_tokens or not batch:
        return [batch]
    if multiple <= 1:
        return _cut(np.asarray(batch), np.asarray(lengths), len(batch), chunk_tokens)
    lengths = np.asarray(lengths)
    groups = [batch[i:i + multiple] for i in range(0, len(batch), multiple)]
    widest = np.asarray([max(int(lengths[j]) for j in g) for g in groups])
    cut = _cut(np.arange(len(groups)), widest, len(groups), max(1, chunk_tokens // multiple))
    return [[j for g in c for j in groups[g]] for c in cut]
