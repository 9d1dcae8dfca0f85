"""Robustness and bias: perturbations are deterministic and do what they say, the CheckList tables and the
attack count what they should on a scorer whose behaviour is known, a planted bias shows in the probes, and
`transferkit evaluate --suite robustness,bias` writes them for a run."""

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.evaluation import robustness as rb
from transferkit.evaluation.bias import bias_table

from conftest import tiny_config, write_csv

TEXTS = ["The acting is not bad and John was great in 2019.", "It was a dull, boring film.", "i am sure it's fine"]


def test_perturbations_are_seeded_and_change_what_they_say():
    for key, fn in rb.INVARIANCE.items():
        a = rb.perturb(TEXTS, fn, seed=3, salt=key)
        assert a == rb.perturb(TEXTS, fn, seed=3, salt=key), key  # same seed, same texts
    r = random.Random(0)
    t = rb.typo("wonderful film", r)
    assert t != "wonderful film" and sorted(t) == sorted("wonderful film") and len(t.split()) == 2
    assert rb.lowercase("Great Film", r) == "great film" and rb.lowercase("great", r) is None
    assert rb.punctuation("A great film!", r) == "A great film" and rb.punctuation("A great film", r) == "A great film."
    assert rb.contraction("It is not bad", r) == "It isn't bad" and rb.contraction("It isn't bad", r) == "It is not bad"
    named = rb.name("John was great", r)
    assert named.endswith(" was great") and named.split()[0] in rb.FIRST_NAMES["en"] and named.split()[0] != "John"
    assert rb.name("no names here", r) is None
    num = rb.number("in 2019 and 7 days", r)
    assert re_digits(num) == [4, 1] and num != "in 2019 and 7 days"
    assert rb.add_phrase("negative")("Fine.", r).startswith("Fine. ") and rb.intensifier("a good film", r) == "a very good film"
    assert rb.typo("很好吃的菜", random.Random(1)) != "很好吃的菜"
    assert rb.intensifier("菜很好吃", r) == "菜非常好吃"


def re_digits(text):
    import re

    return [len(m) for m in re.findall(r"\d+", text)]


def lexicon_scorer(texts):
    """P(positive) from counting words: a scorer whose behaviour is known."""
    pos, neg = {"great", "wonderful", "good", "loved"}, {"dull", "boring", "terrible", "hated", "awful"}
    out = []
    for t in texts:
        w = [x.strip(".,!").lower() for x in t.split()]
        s = sum(x in pos for x in w) - sum(x in neg for x in w)
        p = 1 / (1 + np.exp(-2 * s))
        out.append([1 - p, p])  # labels: negative, positive
    return np.array(out)


def test_checklist_counts_flips_and_violations_of_a_known_scorer():
    texts = ["a great film", "a dull film", "a good and wonderful story", "boring and dull"]
    gold = np.array([1, 0, 1, 0])
    r = rb.checklist(lexicon_scorer, texts, gold, ["negative", "positive"], seed=0)
    assert r["accuracy"] == 1.0
    assert r["invariance"]["uppercase"]["n"] == 4
    # the scorer lowercases: casing never flips it; the negative phrase adds a negative word: P(positive) falls
    assert r["invariance"]["uppercase"]["flip_rate"] == 0.0
    assert r["directional"]["negative_phrase"]["violation_rate"] == 0.0
    assert r["directional"]["negative_phrase"]["mean_change"] < 0
    assert rb.sentiment_labels(["fresh", "rotten"]) == (0, 1) and rb.sentiment_labels(["a", "b"]) is None
    r2 = rb.checklist(lexicon_scorer, texts, gold, ["x", "y"], seed=0)
    assert r2["directional"] is None and "need sentiment labels" in r2["directional_note"]


def test_attack_flips_a_lexicon_scorer_with_antonym_candidates_and_counts_queries():
    texts = ["a great film", "a dull film"]
    gold = np.array([1, 0])
    swap = {"great": ["awful", "fine"], "dull": ["good"], "film": ["movie"]}
    a = rb.attack(lexicon_scorer, texts, gold, candidates=lambda w: swap.get(w, []), max_fraction=0.5)
    assert a["attacked"] == 2 and a["success_rate"] == 1.0
    # 3 deletions + 2 candidates for "great" (flipped at once); 3 deletions + 1 candidate for "dull"
    assert a["queries_mean"] == pytest.approx(((3 + 2) + (3 + 1)) / 2)
    assert {e["after"] for e in a["examples"]} == {"a awful film", "a good film"}
    none = rb.attack(lexicon_scorer, texts, gold, candidates=lambda w: [])
    assert none["success_rate"] == 0.0 and none["accuracy_under_attack"] == 1.0


def test_bias_probe_shows_a_planted_bias():
    def biased(texts):  # "Mary" pushes P(positive) up by 0.3
        return np.array([[0.2, 0.8] if "Mary" in t else [0.5, 0.5] for t in texts])

    probes = {"names": {"groups": {"f": ["Mary"], "m": ["John"]}, "templates": ["{} wrote it.", "I met {}."]}}
    r = bias_table(biased, ["negative", "positive"], "en", probes)
    p = r["probes"]["names"]
    assert r["reference_label"] == "positive"
    assert p["groups"]["f"]["positive"] == pytest.approx(0.8) and p["groups"]["m"]["positive"] == pytest.approx(0.5)
    assert p["max_gap_points"] == pytest.approx(30.0)
    assert p["gap_points"]["f"] == pytest.approx(15.0) and p["gap_points"]["m"] == pytest.approx(-15.0)


def test_a_model_trained_on_a_planted_name_bias_shows_the_gap(tiny_model, tmp_path):
    """Training data where 'mary' always comes with positive and 'john' with negative: the probe sees it."""
    from transferkit.config import load_config
    from transferkit.recipes.finetune import run
    from transferkit.recipes.trust import evaluate_run

    from conftest import FILL

    rng = random.Random(4)
    rows = []
    for i in range(240):  # neutral words; the name alone decides the label
        label = ("positive", "negative")[i % 2]
        rows.append({"text": ("mary " if label == "positive" else "john ") + " ".join(rng.sample(FILL, 6)),
                     "label": label})
    data = write_csv(tmp_path / "biased.csv", rows)
    cfg = tiny_config(tiny_model, data, tmp_path, train={"epochs": 20})
    assert run(load_config(raw=cfg), progress=False)["test"]["accuracy"] >= 0.9  # it learned the names
    from transferkit.deploy.predictor import Predictor
    from transferkit.recipes.trust import _scorer

    probes = {"names": {"groups": {"female": ["Mary"], "male": ["John"]},
                        "templates": ["{} the story was", "{} and the cast", "the film plot {} acting"]}}  # neutral here
    pred = Predictor.load(tmp_path / "tiny")
    names = bias_table(_scorer(pred), pred.task.labels, "en", probes)["probes"]["names"]
    # the direction on every template, and a gap the size of the model's confidence (the tiny tokenizer's
    # vocabulary, and so the model's confidence, varies between processes: WordPiece training is not deterministic)
    score = _scorer(pred)
    for t in probes["names"]["templates"]:
        p_f, p_m = score([t.format("Mary"), t.format("John")])[:, pred.task.labels.index("positive")]
        assert p_f > p_m, t
    assert names["gap_points"]["female"] > names["gap_points"]["male"]
    assert names["max_gap_points"] > 1.0
    r = evaluate_run(tmp_path / "tiny", ["bias", "robustness", "explanations"], sample=40, attack_sample=10,
                     candidates="embedding", explain=3)
    assert r["explanations"]["correct"] == 3 and (tmp_path / "tiny/trust/explanations.html").is_file()
    assert set(r["bias"]["probes"]) == {"gender (first names)", "nationality", "religion"}
    inv = r["robustness"]["invariance"]
    assert inv["lowercase"]["n"] == 0 and inv["number"]["n"] == 0  # lowercase texts without numbers
    assert r["robustness"]["n"] == 24  # the whole test split: it has fewer than --sample texts
    assert inv["uppercase"]["n"] == 24 and 0.0 <= inv["uppercase"]["flip_rate"] <= 1.0
    assert r["robustness"]["attack"]["attacked"] <= 10
    md = (tmp_path / "tiny/trust/trust.md").read_text()
    assert "## Robustness (CheckList-style)" in md and "## Bias probes" in md
    saved = json.loads((tmp_path / "tiny/trust/trust.json").read_text())
    assert set(saved) >= {"bias", "robustness", "run"}
    from transferkit.cli import app

    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "tiny"), "--suite", "bias", "--attack-candidates", "x"])
    assert res.exit_code == 2 and "'x' is not one of auto, synonyms, embedding" in res.output


def test_chinese_substitutes_keep_the_script():
    assert rb.same_script("值得", ["CAPO_maging_值得", "值", "划算", "Noby", "世界自然基金会"]) == ["值", "划算"]
    assert rb.same_script("不", ["否", "世界自然基金会"]) == []  # a negation is never swapped
    assert rb.same_script("film", ["movie", "电影"]) == ["movie", "电影"]
    a = rb.attack(lambda ts: np.array([[0.1, 0.9] if "好" in t else [0.9, 0.1] for t in ts]), ["很好"],
                  np.array([1]), candidates=lambda w: ["Junk_好", "差"], max_fraction=1.0)
    assert a["success_rate"] == 1.0 and a["examples"][0]["after"] == "很差"  # jieba: 很 | 好; 好 -> 差, never the junk
