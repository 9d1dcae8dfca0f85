"""Splitting and de-duplication: stratified, seeded train/validation/test; leakage between splits removed."""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from sklearn.model_selection import train_test_split

from transferkit.data.sources import Examples

log = logging.getLogger(__name__)


def normalize(text: str) -> str:
    """The key under which two texts count as duplicates: case, width and whitespace ignored."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass
class SplitReport:
    sizes: dict[str, int] = field(default_factory=dict)
    duplicates_within: int = 0
    conflicting_labels: int = 0
    leaked_removed: dict[str, int] = field(default_factory=dict)
    fractions: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "sizes": self.sizes,
            "duplicates_removed_within": self.duplicates_within,
            "duplicates_with_conflicting_labels": self.conflicting_labels,
            "leaked_removed": self.leaked_removed,
            "split_fractions": self.fractions,
        }


def _key(ex: Examples, i: int) -> str:
    pair = ex.text_pairs[i] if ex.text_pairs is not None else ""
    return normalize(ex.texts[i]) + "\x00" + normalize(pair)


def dedupe(ex: Examples) -> tuple[Examples, int, int]:
    """Keep the first occurrence of each text. Returns (examples, removed, with conflicting labels)."""
    first: dict[str, int] = {}
    conflicts = 0
    keep: list[int] = []
    for i in range(len(ex)):
        k = _key(ex, i)
        if k in first:
            if str(ex.labels[first[k]]) != str(ex.labels[i]):
                conflicts += 1
            continue
        first[k] = i
        keep.append(i)
    return ex.subset(keep), len(ex) - len(keep), conflicts


def remove_leakage(train: Examples, others: list[Examples]) -> dict[str, int]:
    """Drop from each later split the texts already present in an earlier one (train first).
    Mutates `others` in place; returns how many were removed per split."""
    seen = {_key(train, i) for i in range(len(train))}
    removed: dict[str, int] = {}
    for k, ex in enumerate(others):
        keep = [i for i in range(len(ex)) if _key(ex, i) not in seen]
        removed[ex.name] = len(ex) - len(keep)
        sub = ex.subset(keep)
        others[k] = sub
        seen |= {_key(sub, i) for i in range(len(sub))}
    return removed


def _strata(ex: Examples) -> list[str] | None:
    """Stratify on the label (multilabel: on the sorted label set) when every class can be split.
    Structured labels (tag sequences, answers) are not stratified."""
    if not ex.stratify:
        return None
    labels = ex.labels
    keys = [",".join(sorted(map(str, y))) if isinstance(y, list) else str(y) for y in labels]
    counts = Counter(keys)
    if min(counts.values()) < 2:
        return None
    return keys


def _split(idx: list[int], seed: int, strata: list[str] | None, **size: float | int) -> tuple[list[int], list[int]]:
    """sklearn's train_test_split, stratified when the classes allow it (each held-out part must be at
    least as large as the number of classes), else at random."""
    from transferkit.errors import DataError

    try:
        return train_test_split(idx, random_state=seed, stratify=strata, **size)
    except ValueError:
        if strata is not None:
            log.warning("too few examples per class to stratify a split of %d examples: splitting at random",
                        len(idx))
    try:
        return train_test_split(idx, random_state=seed, stratify=None, **size)
    except ValueError as e:
        raise DataError(f"cannot split {len(idx)} examples with {size}: {e} Give more data or change "
                        "data.split.") from None


def check_splittable(ex: Examples, parts: int, what: str) -> None:
    from transferkit.errors import DataError

    if len(ex) < parts:
        where = ex.origin[0].rsplit(" ", 2)[0] if ex.origin and ex.origin[0] else "the data"
        raise DataError(
            f"{where}: {len(ex)} example(s) in the {ex.name} split after de-duplication, too few to {what} "
            f"(at least {parts} are needed; a useful run needs hundreds). Give more data, or give the "
            "validation and test splits as files (data.train / data.validation / data.test)."
        )


def stratified_split(ex: Examples, val: float, test: float, seed: int) -> tuple[Examples, Examples, Examples]:
    check_splittable(ex, 3, "split it into train, validation and test")
    idx = list(range(len(ex)))
    strata = _strata(ex)
    if strata is None and ex.stratify:
        log.warning("some class has a single example: splitting without stratification")
    rest, test_idx = _split(idx, seed, strata, test_size=test)
    strata_rest = [strata[i] for i in rest] if strata else None
    if strata_rest and min(Counter(strata_rest).values()) < 2:
        strata_rest = None
    train_idx, val_idx = _split(rest, seed, strata_rest, test_size=val / (1.0 - test))
    return (
        ex.subset(sorted(train_idx), "train"),
        ex.subset(sorted(val_idx), "validation"),
        ex.subset(sorted(test_idx), "test"),
    )


def stratified_sample(ex: Examples, n: int, seed: int) -> Examples:
    if n >= len(ex):
        return ex
    keep, _ = _split(list(range(len(ex))), seed, _strata(ex), train_size=n)
    return ex.subset(sorted(keep))


def per_class_sample(ex: Examples, k: int, seed: int) -> Examples:
    """Exactly `k` examples of each label (few-shot training sets), drawn with `seed`, kept in their original
    order. Single-label splits only; a label with fewer than `k` examples is a DataError naming it."""
    import random

    from transferkit.errors import DataError

    if not ex.stratify or any(isinstance(y, list) for y in ex.labels):
        raise DataError(f"{ex.name}: k examples per class needs one label per example (single-label "
                        "classification); use data.train_limit for other tasks")
    by: dict[str, list[int]] = {}
    for i, y in enumerate(ex.labels):
        by.setdefault(str(y), []).append(i)
    short = {y: len(ix) for y, ix in by.items() if len(ix) < k}
    if short:
        raise DataError(f"the {ex.name} split has fewer than {k} examples of label(s) "
                        f"{', '.join(f'{y!r} ({n})' for y, n in sorted(short.items()))}: lower the number per class "
                        "or give more data")
    rng = random.Random(seed)
    keep = [i for y in sorted(by) for i in rng.sample(by[y], k)]
    return ex.subset(sorted(keep))


def split_off(ex: Examples, frac: float, seed: int) -> tuple[Examples, Examples]:
    """Hold out a stratified fraction of `ex` (when only one of validation/test was given)."""
    check_splittable(ex, 2, "hold out a split from it")
    idx = list(range(len(ex)))
    keep, held = _split(idx, seed, _strata(ex), test_size=frac)
    return ex.subset(sorted(keep), "train"), ex.subset(sorted(held))
