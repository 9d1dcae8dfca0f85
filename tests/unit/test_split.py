from collections import Counter

import pytest

from transferkit.config import DataConfig
from transferkit.data.prepare import load_splits
from transferkit.data.sources import Examples
from transferkit.data.split import dedupe, normalize, remove_leakage, stratified_split

from conftest import make_rows, write_csv


def _ex(texts, labels, name="train"):
    return Examples(texts=list(texts), labels=list(labels), origin=[f"r{i}" for i in range(len(texts))], name=name)


def test_stratified_split_keeps_class_ratio_and_is_seeded():
    labels = ["a"] * 700 + ["b"] * 300
    ex = _ex([f"t{i}" for i in range(1000)], labels)
    train, val, test = stratified_split(ex, 0.1, 0.1, seed=3)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    for part in (train, val, test):
        assert Counter(part.labels)["b"] / len(part) == pytest.approx(0.3, abs=0.01)
    assert not set(train.texts) & set(test.texts) and not set(val.texts) & set(test.texts)
    again = stratified_split(ex, 0.1, 0.1, seed=3)
    assert again[2].texts == test.texts
    assert stratified_split(ex, 0.1, 0.1, seed=4)[2].texts != test.texts


def test_dedupe_counts_conflicts_and_normalizes():
    ex = _ex(["Good film", "good   FILM", "bad", "bad", "ok"], ["p", "p", "n", "p", "p"])
    out, removed, conflicts = dedupe(ex)
    assert out.texts == ["Good film", "bad", "ok"]
    assert (removed, conflicts) == (2, 1)
    assert normalize("Ｆｕｌｌ  width") == "full width"


def test_leakage_removed_from_later_splits():
    train = _ex(["a", "b", "c"], "xxx")
    val = _ex(["A", "d", "e"], "xxx", "validation")
    test = _ex(["b", "d", "f"], "xxx", "test")
    others = [val, test]
    removed = remove_leakage(train, others)
    assert removed == {"validation": 1, "test": 2}
    assert others[0].texts == ["d", "e"] and others[1].texts == ["f"]


def test_load_splits_from_separate_files_reports_leakage(tmp_path):
    rows = make_rows(120, seed=5)
    train_rows, test_rows = rows[:100], rows[100:] + rows[:7]  # 7 test rows leak from train
    cfg = DataConfig(train=str(write_csv(tmp_path / "train.csv", train_rows + rows[:3])),
                     test=str(write_csv(tmp_path / "test.csv", test_rows)))
    splits = load_splits(cfg)
    rep = splits.report.as_dict()
    assert rep["duplicates_removed_within"] == 3
    assert rep["leaked_removed"] == {"validation": 0, "test": 7}
    assert len(splits.test) == 20
    assert len(splits.train) + len(splits.validation) == 100
    assert not {normalize(t) for t in splits.test.texts} & {normalize(t) for t in splits.train.texts}


def test_builtin_rotten_tomatoes_split_sizes():
    splits = load_splits(DataConfig(source="rotten_tomatoes"))
    sizes = splits.report.sizes
    # 12,808 snippets; 56 exact duplicates, one more once case and whitespace are normalised
    assert splits.report.duplicates_within == 57
    assert sum(sizes.values()) == 12808 - 57
    assert sizes["test"] == pytest.approx(1275, abs=2)
    pos = Counter(splits.test.labels)["positive"] / sizes["test"]
    assert pos == pytest.approx(Counter(splits.train.labels)["positive"] / sizes["train"], abs=0.005)
