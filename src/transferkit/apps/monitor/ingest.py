"""Records into the monitor: files (CSV, JSONL, TXT; .gz / .bz2 too), the built-in `guardian_headlines`, and the
JSON bodies of POST /v1/ingest. Each record becomes (uid, time, text, source); a bad record is refused with its
file and line, and what to do."""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from transferkit.apps.monitor.settings import Ingest
from transferkit.apps.monitor.store import NewText, now, utc
from transferkit.errors import DataError

SUFFIXES = (".csv", ".jsonl", ".txt")
BUILTINS = ("guardian_headlines",)


def parse_time(value: Any, where: str) -> datetime:
    """An ISO 8601 date or time (or epoch seconds) -> naive UTC."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from datetime import timezone

        return datetime.fromtimestamp(float(value), tz=timezone.utc).replace(tzinfo=None)
    text = str(value).strip()
    try:
        return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise DataError(f"{where}: '{text[:40]}' is not a time; write ISO 8601 (2020-03-16, 2020-03-16T09:30:00, "
                        "2020-03-16T09:30:00+01:00) or epoch seconds") from None


def uid_of(ts: datetime, text: str, given: Any = None) -> str:
    if given is not None and str(given).strip():
        return "id:" + str(given).strip()[:120]
    return hashlib.sha1(f"{ts.isoformat()}\n{text}".encode()).hexdigest()


def make(record: Any, cfg: Ingest, where: str, source: str) -> NewText:
    """One record (a text, or a mapping with the text, time and id columns) -> NewText."""
    if isinstance(record, str):
        text, ts, given = record, None, None
    elif isinstance(record, dict):
        if cfg.text_column not in record:
            raise DataError(f"{where}: no '{cfg.text_column}' field (fields: {', '.join(map(str, record)) or 'none'}); "
                            "set ingest.text_column to the field that holds the text")
        text = record[cfg.text_column]
        ts = record.get(cfg.time_column)
        given = record.get(cfg.id_column) if cfg.id_column else None
    else:
        raise DataError(f"{where}: expected a text or an object with '{cfg.text_column}', got {type(record).__name__}")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: the text is empty: nothing to classify")
    text = " ".join(text.split())
    if len(text) > cfg.max_chars:
        raise DataError(f"{where}: {len(text)} characters; the limit is ingest.max_chars = {cfg.max_chars}")
    when = parse_time(ts, where) if ts not in (None, "") else now()
    return NewText(uid=uid_of(when, text, given), ts=when, text=text, source=source)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return open(path, encoding="utf-8", newline="")


def kind_of(path: Path) -> str:
    name = path.name[:-len(path.suffix)] if path.suffix in (".gz", ".bz2") else path.name
    for s in SUFFIXES:
        if name.endswith(s):
            return s
    return ""


def read(source: str | Path, cfg: Ingest) -> Iterator[NewText]:
    """Every record of a file (or a built-in), in file order."""
    if str(source) in BUILTINS:
        yield from _builtin(str(source), cfg)
        return
    path = Path(source)
    if not path.is_file():
        raise DataError(f"'{path}' is not a file; give a .csv, .jsonl or .txt file (or .gz/.bz2 of one), or a "
                        f"built-in: {', '.join(BUILTINS)}")
    kind = kind_of(path)
    if not kind:
        raise DataError(f"'{path}': unknown kind of file; the monitor reads {', '.join(SUFFIXES)} (and .gz/.bz2)")
    name = str(path)
    try:
        with _open_text(path) as f:
            if kind == ".csv":
                reader = csv.DictReader(f)
                if reader.fieldnames is None or cfg.text_column not in reader.fieldnames:
                    raise DataError(f"{name}: no '{cfg.text_column}' column (columns: "
                                    f"{', '.join(reader.fieldnames or []) or 'none'}); set ingest.text_column")
                for i, row in enumerate(reader, 2):
                    yield make(row, cfg, f"{name}:{i}", name)
            elif kind == ".jsonl":
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{name}:{i}: not JSON ({e.msg})") from None
                    yield make(rec, cfg, f"{name}:{i}", name)
            else:
                for i, line in enumerate(f, 1):
                    if line.strip():
                        yield make(line, cfg, f"{name}:{i}", name)
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _builtin(name: str, cfg: Ingest) -> Iterator[NewText]:
    from transferkit.data.builtin import load_builtin

    ds = load_builtin(name)
    rows = sorted(zip(ds["date"], ds["text"], range(len(ds))), key=lambda r: (r[0], r[2]))  # oldest first
    for date, text, i in rows:
        ts = parse_time(date, f"{name}[{i}]")
        text = " ".join(str(text).split())
        if text:
            yield NewText(uid=uid_of(ts, text), ts=ts, text=text, source=name)
