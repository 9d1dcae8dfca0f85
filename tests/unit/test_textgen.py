"""Generation metrics on known pairs (rouge-score and sacreBLEU underneath)."""

import pytest

from transferkit.evaluation.textgen import distinct, generation_metrics, is_chinese, join_cjk, rouge


def test_identical_texts_score_perfectly_in_english_and_chinese():
    for texts, zh in ((["the cat sat on the mat today", "a dog ran home"], False), (["我喜欢这只猫", "今天天气很好"], True)):
        m = generation_metrics(texts, texts, chinese=zh)
        assert m["rouge1"] == m["rouge2"] == m["rougeL"] == pytest.approx(1.0)
        assert m["bleu"] == pytest.approx(100.0) and m["chrf"] == pytest.approx(100.0)


def test_rouge_on_known_partial_matches():
    assert rouge(["the cat ran"], ["the cat sat"], chinese=False)["rouge1"] == pytest.approx(2 / 3)
    assert rouge(["the cat ran"], ["the cat sat"], chinese=False)["rouge2"] == pytest.approx(1 / 2)
    # Chinese is scored on characters (rouge-score's own tokenizer would drop every one of them)
    r = rouge(["我喜欢狗"], ["我喜欢猫"], chinese=True)
    assert r["rouge1"] == pytest.approx(3 / 4) and r["rouge2"] == pytest.approx(2 / 3)
    assert rouge(["完全不同"], ["我喜欢猫"], chinese=True)["rougeL"] == 0.0


def test_bleu_and_chrf_order_a_good_and_a_bad_output():
    ref = ["the quick brown fox jumps over the lazy dog"]
    good = generation_metrics(["the quick brown fox jumps over a lazy dog"], ref, chinese=False)
    bad = generation_metrics(["a slow red cat sleeps"], ref, chinese=False)
    assert 30 < good["bleu"] < 100 and bad["bleu"] < 5 and good["chrf"] > bad["chrf"]


def test_distinct_n_lengths_and_language_detection():
    assert distinct(["a a a a"], 1, chinese=False) == pytest.approx(1 / 4)
    assert distinct(["a b", "a b"], 2, chinese=False) == pytest.approx(1 / 2)
    m = generation_metrics(["a b c", ""], ["a b", "c d e f"], chinese=False)
    assert m["length"] == {"unit": "words", "prediction_mean": 1.5, "reference_mean": 3.0, "empty_predictions": 1}
    assert is_chinese(["我喜欢猫。", "你好"]) and not is_chinese(["hello there", "我"])
    assert join_cjk("我 喜 欢 cats 和 狗 。") == "我喜欢cats和狗。"
    assert join_cjk("new york city") == "new york city"
