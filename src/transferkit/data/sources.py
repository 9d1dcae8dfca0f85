"""Load examples from wherever they are: files, saved `datasets` folders, built-ins, the hub.

Returns `Examples` per split, with the configured columns mapped to text/label and an origin per row
(file and row) so that any later check can name the offending record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from transferkit.data.builtin import BUILTIN, load_builtin
from transferkit.errors import DataError, did_you_mean


FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".txt": "txt"}


@dataclass
class Examples:
    """One split: parallel lists. `origin[i]` names where example i came from (for error messages)."""

    texts: list[str]
    labels: list[Any]
    origin: list[str]
    text_pairs: list[str] | None = None
    name: str = "data"
    meta: dict[str, Any] = field(default_factory=dict)
    #: structured inputs of token, span and pair tasks (tokens, spans, question + context); `texts` then
    #: holds a plain-text key used for de-duplication, leakage removal and empty checks
    inputs: list[Any] | None = None
    #: stratify splits and samples on the label (classification); structured labels are split at random
    stratify: bool = True

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int], name: str | None = None) -> Examples:
        return Examples(
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            origin=[self.origin[i] for i in idx],
            text_pairs=[self.text_pairs[i] for i in idx] if self.text_pairs is not None else None,
            name=name or self.name,
            inputs=[self.inputs[i] for i in idx] if self.inputs is not None else None,
            stratify=self.stratify,
        )


def check_utf8(path: Path) -> None:
    """Fail with the line number of the first byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}). "
            "Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
        ) from None


def iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) for each non-blank line of a JSONL file of objects; `where` is 'FILE line N'.
    Raises DataError naming the line on a missing file, non-UTF-8 bytes, bad JSON or a non-object."""
    if not path.is_file():
        raise DataError(f"file '{path}' does not exist (working directory: {Path.cwd()}).")
    check_utf8(path)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg}).") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
        yield where, obj


def read_file(path: str | Path) -> Dataset:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file '{p}' does not exist (working directory: {Path.cwd()}).")
    if p.is_dir():
        return read_saved(p)["train"]
    fmt = FILE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{p}: unsupported file type '{p.suffix}'. Use .csv, .tsv, .jsonl, .txt (one text per line) or a saved "
            "`datasets` folder."
        )
    check_utf8(p)
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty.")
    if fmt == "jsonl":
        return _read_jsonl(p)
    try:
        if fmt in ("csv", "tsv"):
            import pandas as pd

            # dtype=str, keep_default_na=False: cells stay text ('' when empty, so the empty-text check can
            # name the row; 'NA' stays a word) and labels such as 0/1 are not turned into floats.
            # skip_blank_lines=False: a blank or whitespace-only line is a row (an empty text that the checks
            # name), not silently dropped, so row N stays the file's N-th data row.
            df = pd.read_csv(p, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                             skip_blank_lines=False)
            if len(df) == 0:
                raise DataError(f"{p}: the file has a header ({', '.join(map(str, df.columns))}) but no rows.")
            return Dataset.from_pandas(df, preserve_index=False)
        return Dataset.from_dict({"text": p.read_text(encoding="utf-8").splitlines()})
    except DataError:
        raise
    except Exception as e:  # the parsers raise many types; all mean "this file is malformed"
        raise DataError(f"{p}: could not be parsed as {fmt}: {e}") from None


LINE = "__line__"  # a JSONL table's 1-based line numbers (blank lines are skipped, so rows != lines)


def _read_jsonl(p: Path) -> Dataset:
    """JSONL records as a table, errors naming the 1-based line. A field whose values mix strings and
    numbers is read as strings (the task's checks then see one kind of value); a field that mixes
    scalars with lists or objects is an error."""
    lines: list[int] = []
    records: list[dict[str, Any]] = []
    for where, obj in iter_jsonl(p):
        lines.append(int(where.rsplit(" ", 1)[1]))
        records.append(obj)
    if not records:
        raise DataError(f"{p}: the file has no records (only blank lines).")
    kinds: dict[str, dict[str, int]] = {}  # field -> kind -> first line
    for n, rec in zip(lines, records):
        for k, v in rec.items():
            if v is not None:
                kind = "list" if isinstance(v, list) else "object" if isinstance(v, dict) else \
                    "string" if isinstance(v, str) else "number"
                kinds.setdefault(k, {}).setdefault(kind, n)
    for k, seen in kinds.items():
        if len(seen) < 2:
            continue
        if set(seen) <= {"string", "number"}:
            for rec in records:
                if rec.get(k) is not None and not isinstance(rec[k], str):
                    rec[k] = json.dumps(rec[k]) if isinstance(rec[k], bool) else str(rec[k])
            continue
        shown = ", ".join(f"a {kind} at line {n}" for kind, n in sorted(seen.items(), key=lambda x: x[1]))
        raise DataError(f"{p}: field '{k}' holds different kinds of values ({shown}); give every record the "
                        "same kind.")
    columns = list(dict.fromkeys(k for rec in records for k in rec))
    table: dict[str, list[Any]] = {c: [rec.get(c) for rec in records] for c in columns}
    table[LINE] = lines
    try:
        return Dataset.from_dict(table)
    except Exception as e:  # pyarrow: nested values of different shapes
        raise DataError(f"{p}: could not be read as a table of records: {str(e).splitlines()[0]}") from None


def read_saved(path: Path) -> DatasetDict:
    from datasets import load_from_disk

    if not any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
        inside = sorted(x.name for x in path.iterdir())[:6]
        raise DataError(
            f"'{path}' is a folder, not a data file, and not a saved `datasets` folder (no dataset_dict.json or "
            f"state.json; it holds {', '.join(inside) or 'nothing'}). Give a .csv/.tsv/.jsonl file, or a folder "
            "written by Dataset.save_to_disk / DatasetDict.save_to_disk."
        )
    try:
        obj = load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"'{path}': could not be loaded as a saved `datasets` folder: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return obj if isinstance(obj, DatasetDict) else DatasetDict({"train": obj})


def _looks_local(source: str) -> bool:
    """A path rather than a hub name: starts like a path, has a file extension, more than one '/', or its
    first part is a folder here."""
    first = source.split("/")[0]
    return (source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
            or Path(source).suffix.lower() in FILE_FORMATS or Path(first).is_dir())


def read_source(source: str) -> DatasetDict:
    """A built-in name, a file, a saved folder, or (for users online) a hub dataset name."""
    if source in BUILTIN:
        return DatasetDict({"train": load_builtin(source)})
    p = Path(source).expanduser()
    if p.is_dir():
        return read_saved(p)
    if p.exists():
        return DatasetDict({"train": read_file(p)})
    if "/" not in source or _looks_local(source):
        what = "a built-in dataset" if "/" not in source else "a hub dataset name (owner/name)"
        raise DataError(
            f"data source '{source}' does not exist: no such file or folder (working directory: {Path.cwd()}), "
            f"and it is not {what}.{did_you_mean(source, BUILTIN)} Built-ins: {', '.join(BUILTIN)}; "
            "files: .csv, .tsv, .jsonl; hub names (owner/name) need an internet connection."
        )
    import os

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise DataError(f"data source '{source}': no such file or folder (working directory: {Path.cwd()}); as a "
                        "hub dataset name it needs an internet connection, and HF_HUB_OFFLINE is set.")
    from datasets import load_dataset

    try:
        return load_dataset(source)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"data source '{source}': no such file or folder (working directory: {Path.cwd()}), and loading it as "
            f"a hub dataset failed (hub names need an internet connection): {reason}"
        ) from None


def to_examples(ds: Dataset, *, text_column: str, label_column: str | None, text_pair_column: str | None,
                where: str, name: str, option: str | None = None) -> Examples:
    """`option`: how the user names the text column where it is not the config (predict's --text-column)."""
    cols = [c for c in ds.column_names if c != LINE]
    wanted = [("text_column", text_column), ("label_column", label_column), ("text_pair_column", text_pair_column)]
    for key, col in wanted:
        if col is not None and col not in cols:
            raise DataError(
                f"{where}: no column '{col}' ({option or f'data -> {key}'}).{did_you_mean(col, cols)} "
                f"Columns found: {', '.join(cols)}."
            )
    n = len(ds)
    row_word = "line" if where.endswith((".jsonl", ".json", ".txt")) else "row"
    numbers = ds[LINE] if LINE in ds.column_names else range(1, n + 1)
    origin = [f"{where} {row_word} {i}" for i in numbers]
    texts = ["" if t is None else str(t) for t in ds[text_column]]
    labels = list(ds[label_column]) if label_column else [None] * n
    pairs = ["" if t is None else str(t) for t in ds[text_pair_column]] if text_pair_column else None
    return Examples(texts=texts, labels=labels, origin=origin, text_pairs=pairs, name=name)
