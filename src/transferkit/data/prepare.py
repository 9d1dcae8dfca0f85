"""From a DataConfig to checked train/validation/test Examples and a report of what was done."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from datasets import DatasetDict

from transferkit.config import DataConfig
from transferkit.data.checks import check_labels_present, check_texts
from transferkit.data.sources import Examples, read_file, read_source, to_examples
from transferkit.data.split import (
    SplitReport,
    dedupe,
    remove_leakage,
    split_off,
    per_class_sample,
    stratified_sample,
    stratified_split,
)
from transferkit.errors import DataError

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}


@dataclass
class Splits:
    train: Examples
    validation: Examples
    test: Examples
    report: SplitReport

    def __iter__(self):
        return iter((self.train, self.validation, self.test))


#: A task's own reader (token, span and pair tasks): a source or file -> Examples per raw split name.
Reader = Callable[[str, DataConfig], dict[str, Examples]]


def _columns_reader(ref: str, cfg: DataConfig) -> dict[str, Examples]:
    """The default reader: text (+ pair) and label columns of a table, built-in or hub dataset."""
    dd: DatasetDict = read_source(ref) if ref == cfg.source else DatasetDict({"train": read_file(ref)})
    return {split: to_examples(ds, text_column=cfg.text_column, label_column=cfg.label_column,
                               text_pair_column=cfg.text_pair_column,
                               where=ref if len(dd) == 1 else f"{ref}[{split}]", name=split)
            for split, ds in dd.items()}


def _read(cfg: DataConfig, read: Reader) -> tuple[dict[str, Examples], str]:
    out: dict[str, Examples] = {}
    if cfg.source:
        found = read(cfg.source, cfg)
        for split, ex in found.items():
            name = SPLIT_ALIASES.get(split)
            if name and name not in out:
                ex.name = name
                out[name] = ex
        if "train" not in out:
            raise DataError(f"{cfg.source}: no 'train' split; found {list(found)}.")
        return out, cfg.source
    for name in ("train", "validation", "test"):
        path = getattr(cfg, name)
        if path:
            found = read(path, cfg)
            ex = found.get("train") or next(iter(found.values()))
            ex.name = name
            out[name] = ex
    return out, str(cfg.train)


def load_splits(cfg: DataConfig, read: Reader | None = None) -> Splits:
    """Read, check, de-duplicate, split. Raises DataError naming file and row on bad data.
    `read`: the task's reader for structured data (default: text and label columns)."""
    parts, where = _read(cfg, read or _columns_reader)
    for ex in parts.values():
        check_texts(ex)
        check_labels_present(ex)
    report = SplitReport()
    train = parts["train"]
    if cfg.dedupe:
        train, report.duplicates_within, report.conflicting_labels = dedupe(train)
        if report.duplicates_within:
            log.info("removed %d duplicate texts from %s (%d had conflicting labels)",
                     report.duplicates_within, where, report.conflicting_labels)
    if cfg.limit:
        total = len(train) + sum(len(parts[s]) for s in ("validation", "test") if s in parts)
        if total > cfg.limit:
            train = stratified_sample(train, int(len(train) * cfg.limit / total), cfg.split.seed)
            for s in ("validation", "test"):
                if s in parts:
                    parts[s] = stratified_sample(parts[s], max(10, int(len(parts[s]) * cfg.limit / total)),
                                                 cfg.split.seed)
    val, test = parts.get("validation"), parts.get("test")
    if val is None and test is None:
        train, val, test = stratified_split(train, cfg.split.validation, cfg.split.test, cfg.split.seed)
        report.fractions = {"train": 1 - cfg.split.validation - cfg.split.test,
                            "validation": cfg.split.validation, "test": cfg.split.test}
    elif val is None or test is None:
        missing = "validation" if val is None else "test"
        frac = getattr(cfg.split, missing)
        train, held = split_off(train, frac, cfg.split.seed)
        val, test = (held, test) if missing == "validation" else (val, held)
        report.fractions = {missing: frac}
    assert val is not None and test is not None  # every branch above gives both
    train.name, val.name, test.name = "train", "validation", "test"
    if cfg.dedupe:
        others = [val, test]
        report.leaked_removed = remove_leakage(train, others)
        val, test = others
        if any(report.leaked_removed.values()):
            log.warning("removed texts also present in an earlier split (leakage): %s", report.leaked_removed)
    for ex in (train, val, test):
        if len(ex) == 0:
            raise DataError(f"the {ex.name} split is empty after de-duplication; give more data.")
    seed = cfg.split.seed if cfg.train_sample_seed is None else cfg.train_sample_seed
    if cfg.train_limit and len(train) > cfg.train_limit:
        train = stratified_sample(train, cfg.train_limit, seed)
        train.name = "train"
    if cfg.train_per_class:
        train = per_class_sample(train, cfg.train_per_class, seed)
    if cfg.validation_per_class:
        val = per_class_sample(val, cfg.validation_per_class, seed)
    report.sizes = {"train": len(train), "validation": len(val), "test": len(test)}
    return Splits(train, val, test, report)

