"""Masked-LM corruption: which positions are predicted, and what the model sees there.

Selection: `probability` of the maskable tokens (special tokens never are). Token level: each token
independently. Whole word: words are drawn in random order until the selected tokens reach
round(probability x maskable tokens), so all pieces of a word are selected together.
Replacement of a selected token (per word with whole-word masking, so a word is never half-masked):
`mask_fraction` -> [MASK], `random_fraction` -> a random vocabulary token, the rest unchanged.
"""

from __future__ import annotations

import numpy as np

IGNORE = -100


def select(word_ids: np.ndarray, probability: float, rng: np.random.Generator, whole_word: bool) -> np.ndarray:
    """Boolean mask of the selected positions of one sequence (word_ids: -1 marks special tokens/padding)."""
    maskable = word_ids >= 0
    n = int(maskable.sum())
    chosen = np.zeros(len(word_ids), dtype=bool)
    if n == 0:
        return chosen
    if not whole_word:
        chosen = maskable & (rng.random(len(word_ids)) < probability)
        if not chosen.any():
            chosen[rng.choice(np.flatnonzero(maskable))] = True
        return chosen
    budget = max(1, int(round(probability * n)))
    words = np.unique(word_ids[maskable])
    count = 0
    for w in rng.permutation(words):
        positions = word_ids == w
        size = int(positions.sum())
        if count + size > budget and count > 0:
            continue  # a long word that would overshoot: try shorter ones
        chosen |= positions
        count += size
        if count >= budget:
            break
    return chosen


def corrupt(input_ids: np.ndarray, word_ids: np.ndarray, chosen: np.ndarray, rng: np.random.Generator, *,
            mask_id: int, vocab_size: int, mask_fraction: float, random_fraction: float,
            whole_word: bool) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted input ids, labels with IGNORE where nothing is predicted) for one sequence."""
    labels = np.where(chosen, input_ids, IGNORE)
    out = input_ids.copy()
    if whole_word:  # one draw per word, shared by its pieces
        words = np.unique(word_ids[chosen])
        draw = dict(zip(words.tolist(), rng.random(len(words)).tolist()))
        u = np.array([draw.get(int(w), 1.0) for w in word_ids])
    else:
        u = rng.random(len(input_ids))
    to_mask = chosen & (u < mask_fraction)
    to_random = chosen & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
    out[to_mask] = mask_id
    out[to_random] = rng.integers(0, vocab_size, int(to_random.sum()))
    return out, labels
