"""A linear-chain CRF over word-level tag scores, constrained to valid BIO / BIOES sequences.

Training uses pytorch-crf's `CRF` (its forward algorithm gives the log-likelihood); its transition scores are
reparametrised (torch.nn.utils.parametrize) so that a transition the tagging scheme forbids (O -> I-PER,
B-PER -> I-ORG, start -> I-X, ... ) scores -1e4 and can never be learnt into being allowed. Decoding is Viterbi
over numpy arrays with the same constrained scores (what task.json keeps), so prediction from an ONNX export
needs no torch and decodes exactly as evaluation does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

FORBIDDEN = -1e4


def _split(tag: str) -> tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def allowed(tags: list[str], scheme: str = "BIO") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean (start, end, transitions[i, j]: tag i then tag j) of the sequences the scheme allows."""
    n = len(tags)
    parts = [_split(t) for t in tags]
    start, end, trans = np.ones(n, bool), np.ones(n, bool), np.ones((n, n), bool)
    inside = {"I"} if scheme == "BIO" else {"I", "E"}
    for j, (pj, kj) in enumerate(parts):
        if pj in inside:
            start[j] = False
        if scheme == "BIOES" and pj in ("B", "I"):
            end[j] = False
        for i, (pi, ki) in enumerate(parts):
            if scheme == "BIO":
                ok = pj != "I" or (pi in ("B", "I") and ki == kj)
            else:  # BIOES: I/E continue a B/I of the same type; B/S/O follow O, E or S
                if pj in ("I", "E"):
                    ok = pi in ("B", "I") and ki == kj
                else:
                    ok = pi in ("O", "E", "S")
            trans[i, j] = ok
    return start, end, trans


class _Constrain(nn.Module):
    penalty: torch.Tensor

    def __init__(self, ok: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("penalty", torch.where(torch.from_numpy(ok), 0.0, FORBIDDEN).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.penalty


def constrained_crf(tags: list[str], scheme: str = "BIO") -> nn.Module:
    """pytorch-crf's CRF (batch first) with the scheme's forbidden transitions fixed at -1e4."""
    from torch.nn.utils import parametrize
    from torchcrf import CRF

    crf = CRF(len(tags), batch_first=True)
    start, end, trans = allowed(tags, scheme)
    parametrize.register_parametrization(crf, "start_transitions", _Constrain(start))
    parametrize.register_parametrization(crf, "end_transitions", _Constrain(end))
    parametrize.register_parametrization(crf, "transitions", _Constrain(trans))
    return crf


def crf_scores(crf: nn.Module) -> dict[str, Any]:
    """The (constrained) transition scores as lists, for task.json."""
    return {k: getattr(crf, k).detach().cpu().numpy().tolist()
            for k in ("start_transitions", "end_transitions", "transitions")}


def viterbi(emissions: np.ndarray, start: np.ndarray, end: np.ndarray, trans: np.ndarray) -> list[int]:
    """The highest-scoring tag sequence for (length, tags) emission scores."""
    n = emissions.shape[0]
    if n == 0:
        return []
    score = start + emissions[0]
    back = np.zeros((n, emissions.shape[1]), dtype=np.int64)
    for t in range(1, n):
        cand = score[:, None] + trans  # previous tag i -> tag j
        back[t] = cand.argmax(axis=0)
        score = cand.max(axis=0) + emissions[t]
    best = [int((score + end).argmax())]
    for t in range(n - 1, 0, -1):
        best.append(int(back[t, best[-1]]))
    return best[::-1]
