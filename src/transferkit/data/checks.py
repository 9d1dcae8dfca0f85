"""Checks that stop bad data before training, naming the file and row of the first offenders."""

from __future__ import annotations

from collections.abc import Iterable

from transferkit.data.sources import Examples
from transferkit.errors import DataError

SHOW = 5  # offending rows named in a message


def _listing(rows: list[str]) -> str:
    more = f" (and {len(rows) - SHOW} more)" if len(rows) > SHOW else ""
    return "; ".join(rows[:SHOW]) + more


def _labels(labels: set[str], show: int = 12) -> str:
    ordered = sorted(labels)
    more = f" ... ({len(ordered)} in all)" if len(ordered) > show else ""
    return str(ordered[:show]) + more


def check_texts(ex: Examples) -> None:
    bad = [ex.origin[i] for i, t in enumerate(ex.texts) if not t.strip()]
    if bad:
        raise DataError(
            f"{len(bad)} empty text(s) in the {ex.name} split: {_listing(bad)}. "
            "Remove these rows or fill in their text."
        )


def check_labels_present(ex: Examples) -> None:
    bad = [ex.origin[i] for i, y in enumerate(ex.labels) if y is None or (isinstance(y, str) and not y.strip())]
    if bad:
        raise DataError(f"{len(bad)} missing label(s) in the {ex.name} split: {_listing(bad)}.")


def check_known_labels(ex: Examples, known: Iterable[str]) -> None:
    """Every label of a validation/test example must have been seen in training (or be declared)."""
    known_set = set(known)
    bad: list[str] = []
    unknown: set[str] = set()
    for i, labels in enumerate(ex.labels):
        for y in labels if isinstance(labels, list) else [labels]:
            if str(y) not in known_set:
                bad.append(f"{ex.origin[i]} ('{y}')")
                unknown.add(str(y))
    if bad:
        raise DataError(
            f"{len(bad)} example(s) in the {ex.name} split carry label(s) {_labels(unknown)} that the "
            f"training data does not have: {_listing(bad)}. Known labels: {_labels(known_set)}. Fix the "
            "labels, add training examples for them, or list them in task.labels."
        )
