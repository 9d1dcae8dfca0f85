"""Calibration of class probabilities: expected calibration error, reliability bins, temperature scaling.

A model is calibrated when, of the predictions it makes with confidence p, a fraction p is right. The expected
calibration error (ECE, Guo et al. 2017) bins the test predictions by their confidence (the top class's
probability) into equal-width bins and averages |accuracy - confidence| over the bins, weighted by their size.
Temperature scaling divides the logits by one scalar T fitted on the validation split by minimising the negative
log-likelihood; it never changes which class has the highest probability.

Everything here works on probabilities (what the tasks' `scores` return): log-probabilities are logits up to a
per-row constant, which a softmax ignores, so softmax(log p / T) is exactly softmax(logits / T) when p came
from softmax(logits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: equal-width confidence bins, as Guo et al. 2017
BINS = 15
_TINY = 1e-12


def reliability(probs: Any, gold: Any, bins: int = BINS) -> dict[str, Any]:
    """ECE, maximum calibration error and the reliability bins (confidence range, count, mean confidence,
    accuracy) of top-label predictions."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(gold).astype(int)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi]; 0 goes to bin 0
    rows, ece, mce = [], 0.0, 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if not n:
            continue
        c, a = float(conf[mask].mean()), float(correct[mask].mean())
        gap = abs(a - c)
        ece += n / len(y) * gap
        mce = max(mce, gap)
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n, "confidence": c, "accuracy": a})
    return {"ece": float(ece), "mce": float(mce), "bins": rows}


def ece(probs: Any, gold: Any, bins: int = BINS) -> float:
    return float(reliability(probs, gold, bins)["ece"])


def nll(probs: Any, gold: Any) -> float:
    """Mean negative log-likelihood of the gold class."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(gold).astype(int)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], _TINY, 1.0)).mean())


def rescale(probs: Any, factor: float) -> np.ndarray:
    """softmax(log p / factor): the probabilities the same logits give at `factor` times the temperature."""
    logp = np.log(np.clip(np.asarray(probs, dtype=float), _TINY, 1.0)) / factor
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: Any, gold: Any, *, low: float = 0.05, high: float = 20.0) -> float:
    """The T in [low, high] minimising the NLL of softmax(log p / T) on (probs, gold): a one-dimensional convex
    problem in 1/T, solved by bounded scalar minimisation over log T (scipy)."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(gold).astype(int)
    logp = np.log(np.clip(np.asarray(probs, dtype=float), _TINY, 1.0))
    rows = np.arange(len(y))

    def loss(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float((np.log(np.exp(z).sum(axis=1)) - z[rows, y]).mean())

    res = minimize_scalar(loss, bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))


def plot_reliability(curves: dict[str, dict[str, Any]], path: Path, title: str = "test reliability") -> Path:
    """Accuracy against confidence per bin, one line per entry of `curves` (e.g. before / after temperature
    scaling), with the diagonal of perfect calibration and the bin counts as bars."""
    from transferkit.evaluation.report import _plt

    plt = _plt()
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(5, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="perfectly calibrated")
    width = 1.0 / BINS / (len(curves) + 1)
    for i, (name, rel) in enumerate(curves.items()):
        xs = [b["confidence"] for b in rel["bins"]]
        ax.plot(xs, [b["accuracy"] for b in rel["bins"]], marker="o", label=f"{name} (ECE {rel['ece']:.3f})")
        hx.bar([b["lo"] + (i + 0.5) * width for b in rel["bins"]], [b["count"] for b in rel["bins"]], width=width,
               label=name)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    hx.set_xlabel("confidence (top-class probability)")
    hx.set_ylabel("predictions")
    hx.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
