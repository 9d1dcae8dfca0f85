"""Ranking metrics, checked against hand computations in the tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dcg(relevance: "Sequence[float] | np.ndarray") -> float:
    """Discounted cumulative gain of relevances in ranked order: sum (2^rel - 1) / log2(rank + 1)."""
    rel = np.asarray(relevance, dtype=np.float64)
    return float(np.sum((2.0 ** rel - 1.0) / np.log2(np.arange(2, len(rel) + 2))))


def ndcg_at_k(scores: "Sequence[float] | np.ndarray", relevance: "Sequence[float] | np.ndarray", k: int = 10) -> float:
    """NDCG@k of ranking the items by `scores` (ties broken by position), against graded `relevance`."""
    scores_a, rel = np.asarray(scores, dtype=np.float64), np.asarray(relevance, dtype=np.float64)
    order = np.lexsort((np.arange(len(scores_a)), -scores_a))[:k]
    ideal = dcg(np.sort(rel)[::-1][:k])
    return dcg(rel[order]) / ideal if ideal > 0 else 0.0


def auc(scores: "Sequence[float] | np.ndarray", labels: "Sequence[int] | np.ndarray") -> float:
    """Probability that a random positive scores above a random negative (ties count one half)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def spearman(a: "Sequence[float] | np.ndarray", b: "Sequence[float] | np.ndarray") -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
