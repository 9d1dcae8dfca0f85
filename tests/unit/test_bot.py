"""The customer-service bot's parts on hand-computable cases: exact and hnsw retrieval on a known index, ranking
metrics, the TF-IDF baseline (English words, Chinese characters), the threshold choice, intent weighting, hand-off
recorded in the database, a follow-up that only resolves with the previous turn, and the vendored paraphrases."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from transferkit.apps.bot import BotConfig
from transferkit.apps.bot.bot import Bot, combine, intent_of_entries, words
from transferkit.apps.bot.evaluate import choose_threshold, handoff_figures, paraphrases
from transferkit.apps.bot.index import Entry, FaqIndex, TfidfIndex, VectorIndex, faq_entries, ranking_metrics, ranks
from transferkit.apps.bot.store import Store
from transferkit.config import load_config
from transferkit.errors import ConfigError

QUESTIONS = ["how do i reset my password", "how much does the python course cost",
             "how much does the java course cost", "what is the java course", "where is the office"]
ANSWERS = ["Use the reset link on the login page.", "The Python course costs 100 euros.",
           "The Java course costs 120 euros.", "Twelve weeks of Java, online.", "At 1 Main Street."]
INTENTS = ["account", "billing", "billing", "courses", "contact"]


class BagOfWords:
    """A sentence embedder whose cosines can be computed by hand: one dimension per known word, counts."""

    def __init__(self, texts):
        self.vocab = {w: i for i, w in enumerate(sorted({w for t in texts for w in t.lower().split()}))}

    def __call__(self, texts):
        out = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                if w in self.vocab:
                    out[r, self.vocab[w]] += 1
        return out


def entries():
    return [Entry(q, i, [a]) for q, i, a in zip(QUESTIONS, INTENTS, ANSWERS)]


def bot_cfg(tmp_path, **answer):
    raw = {"name": "b", "output_dir": str(tmp_path / "{name}"), "language": "en",
           "intents": {"run": str(tmp_path / "none")}, "encoder": {"path": "minilm"},
           "answer": {"threshold": 0.5, "intent_weight": 0.0, **answer}}
    return load_config(raw=raw, schema=BotConfig)


def make_bot(tmp_path, intents=None, **answer):
    cfg = bot_cfg(tmp_path, **answer)
    emb = BagOfWords(QUESTIONS + ["tell me about please reset"])
    index = FaqIndex.build(entries(), emb, kind="exact")
    store = Store(f"sqlite:///{tmp_path / 'bot.db'}")
    return Bot(cfg, index, emb, intents, store, cfg.answer.threshold), store


def test_exact_search_returns_the_expected_question_first_and_exact_cosines():
    emb = BagOfWords(QUESTIONS + ["please"])
    index = FaqIndex.build(entries(), emb, kind="exact")
    ids, sims = index.index.search(emb(["please reset my password"]), 2)
    assert ids[0, 0] == 0
    # query {please, reset, my, password} vs "how do i reset my password": 3 shared / sqrt(4 * 6)
    assert sims[0, 0] == pytest.approx(3 / np.sqrt(24), abs=1e-6)
    ids, _ = index.index.search(emb(["where is it"]), 1)
    assert QUESTIONS[ids[0, 0]] == "where is the office"


def test_hnsw_search_agrees_with_exact_and_the_index_survives_a_save(tmp_path):
    pytest.importorskip("hnswlib")
    emb = BagOfWords(QUESTIONS)
    vec = emb(QUESTIONS)
    exact, approx = VectorIndex(vec, "exact"), VectorIndex(vec, "hnsw")
    q = emb(["the java course", "reset password", "office"])
    assert (exact.search(q, 1)[0] == approx.search(q, 1)[0]).all()
    assert np.allclose(exact.search(q, 1)[1], approx.search(q, 1)[1], atol=1e-5)
    FaqIndex(entries(), vec, kind="hnsw").save(tmp_path / "ix")
    back = FaqIndex.load(tmp_path / "ix")
    assert back.meta["kind"] == "hnsw" and back.entries[2].answers == [ANSWERS[2]]
    assert back.index.search(q, 1)[0][:, 0].tolist() == [3, 0, 4]
    with pytest.raises(ConfigError, match="bot build"):
        FaqIndex.load(tmp_path / "missing")


def test_auto_kind_switches_to_hnsw_at_the_size_threshold():
    pytest.importorskip("hnswlib")
    emb = BagOfWords(QUESTIONS)
    assert FaqIndex.build(entries(), emb, kind="auto", exact_below=6).meta["kind"] == "exact"
    assert FaqIndex.build(entries(), emb, kind="auto", exact_below=5).meta["kind"] == "hnsw"


def test_ranks_and_ranking_metrics_by_hand():
    scores = np.array([[0.9, 0.1, 0.3],    # relevant 0: rank 1
                       [0.5, 0.4, 0.6],    # relevant 1: rank 3
                       [0.2, 0.7, 0.7]])   # relevant 2: tie with 1, the lower index first -> rank 2
    r = ranks(scores, [0, 1, 2])
    assert r == [1, 3, 2]
    m = ranking_metrics(r + [6], ks=(1, 5))
    assert m["recall@1"] == pytest.approx(1 / 4) and m["recall@5"] == pytest.approx(3 / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 6) / 4)


def test_tfidf_baseline_english_words_and_chinese_characters():
    t = TfidfIndex(QUESTIONS, "en")
    ids, sims = t.search(["price of the python course"], 2)
    assert ids[0, 0] == 1 and sims[0, 0] > sims[0, 1] > 0
    assert t.similarities(["zzz"]).max() == 0
    zh = TfidfIndex(["谁发明了电灯泡", "什么是化学", "月亮有多远"], "zh")
    assert zh.search(["电灯是谁发明的"], 1)[0][0, 0] == 0
    assert zh.search(["月球离我们多远"], 1)[0][0, 0] == 2


def test_faq_entries_group_answers_by_question():
    e = faq_entries([("ai", "What is AI?", "a1"), ("ai", "What is AI?", "a2"), ("x", "What is AI?", "a1"),
                     ("greetings", "Hello", "Hi")])
    assert [(x.question, x.intent, x.answers) for x in e] == [("What is AI?", "ai", ["a1", "a2"]),
                                                              ("Hello", "greetings", ["Hi"])]


def test_threshold_is_chosen_by_answered_right_minus_wrong():
    top = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, False])
    # answer from 0.6: 2-2=0; 0.7: 2-1=1; 0.8: 1-1=0; 0.9: 1-0=1; none: 0 -> the lowest of the best, 0.7
    assert choose_threshold(top, correct) == pytest.approx(0.7)
    f = handoff_figures(top, correct, np.array([True, True, True, False]), 0.7)
    assert f["handoff_rate"] == 0 and f["handoff_rate_out_of_scope"] == 1 and f["answered"] == 3
    assert f["answered_accuracy"] == pytest.approx(2 / 3, abs=1e-4)


def test_intent_weight_combines_cosine_and_the_candidates_intent_probability():
    ids = np.array([[0, 1]])
    cos = np.array([[0.6, 0.5]])
    probs = np.array([[0.1, 0.9]])  # labels: account, billing
    ei = intent_of_entries(entries(), ["account", "billing"])
    assert ei.tolist() == [0, 1, 1, -1, -1]
    s = combine(cos, ids, probs, ei, 0.5)
    assert s[0].tolist() == pytest.approx([0.5 * 0.6 + 0.5 * 0.1, 0.5 * 0.5 + 0.5 * 0.9])
    assert combine(cos, np.array([[3, 4]]), probs, ei, 0.5)[0].tolist() == pytest.approx([0.3, 0.25])


def test_below_the_threshold_the_bot_hands_off_and_records_it(tmp_path):
    bot, store = make_bot(tmp_path)
    r = bot.reply("s1", "please reset my password")
    assert not r["handed_off"] and r["reply"] == ANSWERS[0] and r["score"] == pytest.approx(3 / np.sqrt(24), abs=1e-4)
    r = bot.reply("s1", "blorp fizzle wug")  # short, so also read with the previous turn: that reading only
    # re-matches the previous question (0.61 > 0.5), which does not count: hand-off
    assert r["handed_off"] and r["reply"] == bot.cfg.handoff_text() and r["score"] < 0.5
    rows = store.turns(session="s1")
    assert [x["handed_off"] for x in rows] == [False, True]
    assert rows[1]["message"] == "blorp fizzle wug" and rows[1]["reply"] == bot.cfg.handoff_text()
    assert [x["id"] for x in store.turns(handed_off=True)] == [rows[1]["id"]]
    # the same message with a threshold of 0 is answered
    bot2, _ = make_bot(tmp_path / "t0", threshold=0.0)
    assert not bot2.reply("s", "please reset my password")["handed_off"]


def test_a_follow_up_resolves_with_the_previous_turn(tmp_path):
    bot, store = make_bot(tmp_path)
    first = bot.reply("a", "tell me about the java course")
    assert first["matched_question"] == "what is the java course" and not first["handed_off"]
    r = bot.reply("a", "how much does it cost")
    # alone, the message ties between the python and the java price (4 known words: 4 / sqrt(4 * 7) = 0.756 each);
    # with the previous turn, the java price question scores 7 / sqrt(10 * 7) = 0.837 ('it' is not a known word)
    assert r["used_context"] and r["matched_question"] == "how much does the java course cost"
    assert r["reply"] == ANSWERS[2] and r["score"] == pytest.approx(7 / np.sqrt(70), abs=1e-4)
    alone = bot.reply("b", "how much does it cost")  # a new session: no context
    assert not alone["used_context"] and alone["matched_question"] != "how much does the java course cost"
    assert alone["score"] == pytest.approx(4 / np.sqrt(28), abs=1e-4)
    assert [x["used_context"] for x in store.turns()] == [False, True, False]
    # with context switched off the follow-up is the tie again
    off, _ = make_bot(tmp_path / "off")
    off.cfg.context.followup_max_words = 0
    off.reply("a", "tell me about the java course")
    assert off.reply("a", "how much does it cost")["matched_question"] != "how much does the java course cost"


def test_words_counts_chinese_characters_as_half_words():
    assert words("how much is it") == 4
    assert words("多少钱") == 2 and words("它多少钱呢") == 3 and words("HAL是活着") == 3


def test_paraphrases_are_reworded_corpus_questions_split_in_two_halves():
    from transferkit.data.builtin import chatterbot_faq

    for lang, corpus, n_min in (("en", "english", 60), ("zh", "chinese", 40)):
        rows = paraphrases(lang)
        faq = {q: c for c, q, _ in reversed(chatterbot_faq(corpus))}
        scoped = [r for r in rows if r["question"] is not None]
        assert len(scoped) >= n_min and len({r["id"] for r in rows}) == len(rows)
        for r in scoped:
            assert r["question"] in faq, r
            assert faq[r["question"]] == r["intent"], r
            assert r["text"].lower() != r["question"].lower(), r
        assert {r["part"] for r in rows} == {"validation", "test"}
        assert any(r["question"] is None for r in rows if r["part"] == "test")


def test_intent_datasets_are_registered_and_known_to_config_validation():
    from transferkit.data.builtin import BUILTIN
    from transferkit.preflight import BUILTIN_NAMES

    for name in ("chatterbot_intents_en", "chatterbot_intents_zh"):
        assert name in BUILTIN and name in BUILTIN_NAMES
    ds = BUILTIN["chatterbot_intents_en"]()
    assert {"tech_support", "greetings", "ai"} <= set(ds["label"]) and len(set(ds["label"])) == 21


def test_bot_config_reports_every_problem(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(raw={"language": "fr", "intents": {}, "encoder": {"path": "minilm"}, "answer": {"thresh": 1}},
                    schema=BotConfig)
    text = str(e.value)
    assert "language" in text and "intents" in text and "thresh" in text
    cfg = bot_cfg(tmp_path)
    assert cfg.folder == tmp_path / "b" and json.dumps(cfg.model_dump(mode="json"))
