"""The replay sample: a stratified sample of a run's training examples, kept in its folder (replay.jsonl) so
that `transferkit update` can mix them into new data (methods.replay) and estimate the Fisher information
of the parent's task (methods.ewc) without the parent's data source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transferkit.data.sources import Examples
from transferkit.data.split import stratified_sample
from transferkit.errors import DataError

FILE = "replay.jsonl"


def write_sample(run_dir: Path, train: Examples, n: int, seed: int) -> int:
    """Keep up to `n` training examples (stratified by label when the task's labels allow it). Returns how
    many were kept."""
    from transferkit.training.checkpoint import atomic_write_text

    if n <= 0:
        return 0
    kept = stratified_sample(train, n, seed) if len(train) > n else train
    rows = []
    for i in range(len(kept)):
        row: dict[str, Any] = {"text": kept.texts[i], "label": kept.labels[i]}
        if kept.text_pairs is not None:
            row["text_pair"] = kept.text_pairs[i]
        if kept.inputs is not None:
            row["input"] = kept.inputs[i]
        rows.append(json.dumps(row, ensure_ascii=False, default=_plain))
    atomic_write_text(run_dir / FILE, "".join(r + "\n" for r in rows))
    return len(rows)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if hasattr(value, "__dict__"):
        return vars(value)
    raise TypeError(f"cannot keep {type(value).__name__} in {FILE}")


def read_sample(run_dir: Path, *, stratify: bool = True) -> Examples:
    """The kept examples of a run folder, as Examples named 'replay'."""
    path = Path(run_dir) / FILE
    if not path.exists():
        raise DataError(f"{run_dir} keeps no training examples ({FILE} is missing): it was trained with "
                        "output.replay_sample: 0 or before runs kept them. Retrain the parent, or update it "
                        "without methods.replay / methods.ewc (methods.l2sp needs only its weights).")
    texts, labels, pairs, inputs, origin = [], [], [], [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n} is not JSON ({e.msg}); the file is damaged. Retrain the parent "
                            "or update it without methods.replay / methods.ewc.") from None
        texts.append(row["text"])
        labels.append(row["label"])
        pairs.append(row.get("text_pair"))
        inputs.append(row.get("input"))
        origin.append(f"{path}:{n}")
    return Examples(texts=texts, labels=labels, origin=origin,
                    text_pairs=pairs if any(p is not None for p in pairs) else None, name="replay",
                    inputs=inputs if any(x is not None for x in inputs) else None, stratify=stratify)


def concat(a: Examples, b: Examples) -> Examples:
    """`a` followed by `b` (the same kind of examples)."""
    if (a.text_pairs is None) != (b.text_pairs is None) or (a.inputs is None) != (b.inputs is None):
        raise DataError(f"the {b.name} examples do not have the same fields as the {a.name} split (text pairs or "
                        "structured inputs on one side only): the parent run was trained on another kind of data")
    return Examples(texts=a.texts + b.texts, labels=a.labels + b.labels, origin=a.origin + b.origin,
                    text_pairs=None if a.text_pairs is None else a.text_pairs + (b.text_pairs or []),
                    name=a.name, meta=dict(a.meta),
                    inputs=None if a.inputs is None else a.inputs + (b.inputs or []), stratify=a.stratify)
