"""Augmentation: the EDA operations, synonyms from a table, WordNet and the Chinese table, MLM substitution
(and its refusal of a model without an MLM head), the back-translation hook; seeded and reproducible, labels
kept, counts reported, and only the training split ever passes through."""

import json
import random
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from transferkit import methods as registry
from transferkit.cli import app
from transferkit.config import load_config
from transferkit.data.prepare import load_splits
from transferkit.data.sources import Examples
from transferkit.errors import ConfigError
from transferkit.methods import synonyms
from transferkit.methods.augment_common import AugmentConfig, Augmenter
from transferkit.methods.eda import apply
from transferkit.methods.stack import MethodStack
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_config, write_csv

TABLE = {"film": ["movie", "picture"], "great": ["superb", "fine"], "dull": ["boring", "tedious"]}


def _table(tmp_path):
    path = tmp_path / "syn.txt"
    path.write_text("film movie picture\ngreat superb fine\ndull boring tedious\n", encoding="utf-8")
    return path


def _examples(texts, labels=None):
    labels = labels or ["positive"] * len(texts)
    return Examples(texts=list(texts), labels=list(labels), origin=[f"row {i + 2}" for i in range(len(texts))])


def _stack(methods):
    return MethodStack.from_config(load_config(raw={"data": {"source": "x"}, "methods": methods}).methods)


def test_eda_operations():
    syn = lambda w: TABLE.get(w, [])  # noqa: E731
    words = "a great film but the dull ending".split()
    out = apply("synonym_replacement", list(words), 0.3, random.Random(0), syn)
    changed = [(a, b) for a, b in zip(words, out) if a != b]
    assert len(changed) == 2 and all(b in TABLE[a] for a, b in changed)  # int(0.3 * 7) = 2 of great, film, dull
    out = apply("random_insertion", list(words), 0.3, random.Random(0), syn)
    assert len(out) == 9 and sorted(set(out) - set(words)) and set(out) - set(words) <= {s for v in TABLE.values() for s in v}
    out = apply("random_swap", list(words), 0.3, random.Random(0), syn)
    assert sorted(out) == sorted(words) and out != words
    out = apply("random_deletion", list(words), 0.5, random.Random(0), syn)
    assert 1 <= len(out) < len(words) and all(w in words for w in out)
    assert len(apply("random_deletion", ["only"], 1.0, random.Random(0), syn)) == 1  # never empty


def test_eda_adds_labelled_copies_reproducibly_and_reports_them(tmp_path):
    texts = ["a great film", "a dull film indeed", "great acting and a great film", "dull dull dull"]
    ex = _examples(texts, ["positive", "negative", "positive", "negative"])
    methods = {"eda": {"copies": 3, "synonyms": str(_table(tmp_path))}}
    a = _stack(methods).train_examples(ex, seed=1)
    b = _stack(methods).train_examples(ex, seed=1)
    c = _stack(methods).train_examples(ex, seed=2)
    assert a.texts == b.texts and a.texts != c.texts  # seeded
    assert a.texts[:4] == texts and len(a) > 4 and len(set(a.texts)) == len(a)  # originals first, no duplicates
    for t, y, o in zip(a.texts[4:], a.labels[4:], a.origin[4:]):
        src = int(o.split()[1]) - 2  # "row N (eda copy k, op)"
        assert y == ex.labels[src] and "eda copy" in o
    stack = _stack(methods)
    stack.train_examples(ex, seed=1)
    report = stack.describe()[0]
    assert report["original"] == 4 and report["added"] == len(a) - 4
    assert sum(report["by_operation"].values()) == report["added"]
    assert report["added"] + report["dropped_duplicates"] == 4 * 3


def test_only_the_training_split_is_augmented(tiny_model, tmp_path):
    """A spy augmenter records what it is given: exactly the training split; validation and test untouched."""
    seen = {}

    class SpyConfig(AugmentConfig):
        method: ClassVar[str] = "spy_augment"

    @registry.register
    class Spy(Augmenter):
        Config = SpyConfig

        def propose(self, texts, seed):
            seen["texts"] = list(texts)
            return [[(t + " indeed", "spy")] for t in texts]

    data = write_csv(tmp_path / "d.csv", make_rows(100))
    raw = tiny_config(tiny_model, data, tmp_path, methods={"spy_augment": {}}, train={"max_steps": 2})
    summary = run(load_config(raw=raw), progress=False)
    splits = load_splits(load_config(raw=raw).data)
    assert sorted(seen["texts"]) == sorted(splits.train.texts)
    assert not set(seen["texts"]) & (set(splits.validation.texts) | set(splits.test.texts))
    assert summary["methods"][0]["added"] == len(splits.train)
    assert sum(c["support"] for c in summary["test"]["per_class"].values()) == len(splits.test)  # test as it was


@pytest.mark.skipif(synonyms.missing_wordnet() is not None, reason="WordNet not installed (see Makefile)")
def test_eda_uses_wordnet_for_english():
    ex = _examples(["the movie was good"])
    out = _stack({"eda": {"copies": 8, "random_insertion": 0, "random_swap": 0,
                          "random_deletion": 0, "synonym_replacement": 0.5}}).train_examples(ex, seed=0)
    new = {w for t in out.texts[1:] for w in t.split()} - {"the", "movie", "was", "good"}
    assert new and new <= set(" ".join(synonyms.wordnet()("movie") + synonyms.wordnet()("good")).split())


def test_eda_uses_jieba_words_and_the_chinese_table():
    ex = _examples(["这部电影非常好看"])
    out = _stack({"eda": {"copies": 6, "random_insertion": 0, "random_swap": 0, "random_deletion": 0,
                          "synonym_replacement": 0.5}}).train_examples(ex, seed=0)
    assert len(out) > 1 and all(" " not in t for t in out.texts)  # Chinese words joined back without spaces
    zh = synonyms.chinese()
    assert "影片" in zh("电影") and "(" not in "".join(zh("电影"))


def test_mlm_substitution_replaces_words_and_refuses_a_model_without_head(tiny_model, tiny_mlm, tmp_path):
    mlm = tiny_mlm
    texts = [r["text"] for r in make_rows(6, seed=2)]
    methods = {"mlm_substitution": {"model": str(mlm), "copies": 2, "probability": 0.3}}
    a = _stack(methods).train_examples(_examples(texts), seed=3)
    assert a.texts == _stack(methods).train_examples(_examples(texts), seed=3).texts
    assert 6 < len(a) <= 18
    for t, o in zip(a.texts[6:], a.origin[6:]):
        src = texts[int(o.split()[1]) - 2].lower().split()
        diff = sum(x != y for x, y in zip(src, t.split()))
        assert len(t.split()) == len(src) and 1 <= diff <= max(1, round(0.3 * len(src)))
    # the tiny checkpoint is an encoder only (like the packaged MiniLM): refused before the run folder exists
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs",
                                                          methods={"mlm_substitution": {"model": str(tiny_model)}}))
    result = CliRunner().invoke(app, ["finetune", str(cfg)])
    assert result.exit_code == 2, result.stderr
    assert "methods -> mlm_substitution -> model:" in result.stderr and "has no masked-LM head" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_back_translation_is_a_hook(tmp_path):
    from transferkit.methods.back_translation import TRANSLATORS, register_translator

    with pytest.raises(ConfigError, match="no translator named 'opus'"):
        _stack({"back_translation": {"translator": "opus"}}).train_examples(_examples(["a great film"]), seed=0)

    @register_translator("reverse")
    def reverse(texts, seed, copy):
        return [" ".join(reversed(t.split())) + ("!" * copy) for t in texts]

    try:
        out = _stack({"back_translation": {"translator": "reverse", "copies": 2}}).train_examples(
            _examples(["a great film", "dull"]), seed=0)
        assert out.texts == ["a great film", "dull", "film great a", "film great a!", "dull!"]  # "dull" reversed = itself
    finally:
        TRANSLATORS.pop("reverse")


def test_augmenters_each_copy_the_originals_only(tmp_path):
    from transferkit.methods.back_translation import TRANSLATORS, register_translator

    register_translator("shout")(lambda texts, seed, copy: [t.upper() for t in texts])
    try:
        stack = _stack({"eda": {"copies": 2, "synonyms": str(_table(tmp_path))},
                        "back_translation": {"translator": "shout"}})
        out = stack.train_examples(_examples(["a great film", "a dull film"]), seed=0)
        report = {m["method"]: m for m in stack.describe()}
        assert report["back_translation"]["original"] == 2 and report["back_translation"]["added"] == 2
        assert report["eda"]["original"] == 2
        assert len(out) == 2 + report["eda"]["added"] + 2  # not the copies of copies
        assert [t for t in out.texts if t.isupper()] == ["A GREAT FILM", "A DULL FILM"]  # EDA never saw them
    finally:
        TRANSLATORS.pop("shout")


def test_augmentation_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="methods -> eda: every operation has rate 0"):
        load_config(raw={"data": {"source": "x"}, "methods": {"eda": {"synonym_replacement": 0, "random_insertion": 0,
                                                                      "random_swap": 0, "random_deletion": 0}}})
    with pytest.raises(ConfigError, match="methods -> eda -> synonyms: no synonym table at 'nope.txt'"):
        load_config(raw={"data": {"source": "x"}, "methods": {"eda": {"synonyms": "nope.txt"}}})
    with pytest.raises(ConfigError, match="methods -> mlm_substitution -> model: Field required"):
        load_config(raw={"data": {"source": "x"}, "methods": {"mlm_substitution": {}}})
    with pytest.raises(ConfigError, match="methods -> eda: works for text_classification, not for token_classification"):
        load_config(raw={"data": {"source": "x"}, "task": {"type": "token_classification"}, "methods": {"eda": {}}})
