"""The pretraining stage on tiny models: masking statistics, whole-word masking (English pieces, Chinese
jieba words), packing, sentence-pair labels, vocabulary extension, and a pretrain -> finetune round trip."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from conftest import make_rows, sentence, tiny_config, write_csv, assert_declared_metrics
from transferkit.data.packing import Segment, make_pairs, pack_stream, tokenize_documents
from transferkit.tasks.masking import IGNORE, corrupt, select


def _corrupt_many(word_ids: np.ndarray, whole_word: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = np.arange(1000, 1000 + len(word_ids))
    chosen = select(word_ids, 0.15, rng, whole_word)
    out, labels = corrupt(ids, word_ids, chosen, rng, mask_id=4, vocab_size=50_000, mask_fraction=0.8,
                          random_fraction=0.1, whole_word=whole_word)
    return ids, chosen, out, labels


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_rate_and_80_10_10(whole_word):
    # 200 sequences of 128 tokens, words of 1-3 pieces, [CLS]/[SEP] at the ends
    rng = random.Random(0)
    sel = masked = randomized = kept = maskable = 0
    for s in range(200):
        words = [w for w in range(60) for _ in range(rng.randint(1, 3))][:126]
        word_ids = np.array([-1] + words + [-1])
        ids, chosen, out, labels = _corrupt_many(word_ids, whole_word, seed=s)
        assert not chosen[0] and not chosen[-1]  # special tokens are never selected
        assert ((labels != IGNORE) == chosen).all() and (labels[chosen] == ids[chosen]).all()
        maskable += len(words)
        sel += chosen.sum()
        masked += (out[chosen] == 4).sum()
        kept += (out[chosen] == ids[chosen]).sum()
        randomized += ((out[chosen] != 4) & (out[chosen] != ids[chosen])).sum()
        assert (out[~chosen] == ids[~chosen]).all()
    assert abs(sel / maskable - 0.15) < 0.01
    # per word draws (whole word) are coarser than per token: a slightly wider tolerance
    tol = 0.04 if whole_word else 0.025
    assert abs(masked / sel - 0.8) < tol and abs(randomized / sel - 0.1) < tol and abs(kept / sel - 0.1) < tol


def test_whole_word_masking_keeps_english_pieces_together(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    docs = [[sentence(random.Random(i), "positive") + " delightfulness unbrilliant"] for i in range(40)]
    segs = tokenize_documents(tok, docs)
    feats = pack_stream(segs, 64, tok.cls_token_id, tok.sep_token_id)
    multi_piece = 0
    for k, f in enumerate(feats):
        words = np.asarray(f["word_ids"])
        pieces = tok.convert_ids_to_tokens(f["input_ids"])
        for i in range(1, len(pieces)):
            if pieces[i].startswith("##") and words[i - 1] >= 0:  # (a sequence may start mid-word)
                assert words[i] == words[i - 1], "a continuation piece must share its word's id"
                multi_piece += 1
        rng = np.random.default_rng(k)
        chosen = select(words, 0.3, rng, whole_word=True)
        out, _ = corrupt(np.asarray(f["input_ids"]), words, chosen, rng, mask_id=tok.mask_token_id,
                         vocab_size=len(tok), mask_fraction=1.0, random_fraction=0.0, whole_word=True)
        for w in np.unique(words[words >= 0]):
            at = words == w
            assert chosen[at].all() or not chosen[at].any(), "a word is selected whole or not at all"
    assert multi_piece > 40  # the fixture vocabulary really splits these words


def test_chinese_whole_words_follow_jieba():
    from transferkit.data.packing import jieba_word_index
    from transferkit.modeling.vocab import train_wordpiece

    texts = ["我们喜欢自然语言处理。", "北京是中国的首都，人民日报发表文章。"] * 20
    tok = train_wordpiece(texts, vocab_size=200, min_frequency=1)
    seg = tokenize_documents(tok, [[t] for t in texts[:2]], chinese_words="jieba")
    for text, (s,) in zip(texts[:2], seg):
        assert len(s.ids) == len(text)  # one token per character (BERT splits Chinese characters)
        char_word = jieba_word_index(text)
        assert s.words == char_word
        assert max(s.words) + 1 < len(text)  # jieba really groups characters into words
    chars = tokenize_documents(tok, [[texts[0]]], chinese_words="characters")[0][0]
    assert chars.words == list(range(len(texts[0])))


def test_packed_sequences_fill_max_length_and_keep_every_token():
    docs = [[Segment(list(range(100 + 10 * d, 100 + 10 * d + n)), list(range(n))) for n in (7, 5)]
            for d in range(30)]
    feats = pack_stream(docs, 16, cls_id=2, sep_id=3)
    assert all(len(f["input_ids"]) == 16 for f in feats[:-1]) and len(feats[-1]["input_ids"]) <= 16
    assert all(f["input_ids"][0] == 2 and f["input_ids"][-1] == 3 for f in feats)
    stream = [t for f in feats for t in f["input_ids"][1:-1] if t != 3]
    assert stream == [t for d in docs for s in d for t in s.ids]
    assert all(len(f["word_ids"]) == len(f["input_ids"]) for f in feats)


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_sentence_pair_labels_are_balanced_and_fit(objective):
    rng = random.Random(1)
    docs = [[Segment([rng.randrange(10, 90) for _ in range(rng.randint(3, 12))], []) for _ in range(6)]
            for _ in range(300)]
    for d in docs:
        for s in d:
            s.words = list(range(len(s.ids)))
    feats = make_pairs(docs, 32, cls_id=2, sep_id=3, objective=objective, seed=0)
    labels = [f["pair_label"] for f in feats]
    assert len(feats) > 300 and abs(np.mean(labels) - 0.5) < 0.06
    for f in feats:
        assert len(f["input_ids"]) <= 32
        assert f["input_ids"].count(3) == 2 and f["input_ids"][0] == 2
        first_b = f["token_type_ids"].index(1)
        assert f["input_ids"][first_b - 1] == 3  # segment B starts after the first [SEP]


def test_vocabulary_extension_keeps_old_ids_and_initialises_new_rows(tiny_model):
    from transformers import BertForMaskedLM

    from transferkit.modeling.vocab import candidate_words, extend_vocabulary, init_new_embeddings

    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts = ["the delightfulness and the plot"] * 30 + ["unbrilliant acting"] * 25
    words = candidate_words(tok, texts, min_frequency=20, min_pieces=2, max_new=10)
    assert [w for w, _, _ in words] == ["delightfulness", "unbrilliant"]
    new = extend_vocabulary(tok, [w for w, _, _ in words])
    old_vocab, new_vocab = tok.get_vocab(), new.get_vocab()
    assert all(new_vocab[t] == i for t, i in old_vocab.items())
    assert len(new) == len(tok) + 2
    assert new.tokenize("the delightfulness") == ["the", "delightfulness"]
    assert new("a dull film")["input_ids"] == tok("a dull film")["input_ids"]
    model = BertForMaskedLM.from_pretrained(tiny_model)
    before = model.get_input_embeddings().weight.detach().clone()
    pieces = init_new_embeddings(model, tok, new, ["delightfulness", "unbrilliant"])
    after = model.get_input_embeddings().weight.detach()
    assert after.shape[0] == len(new) and torch.equal(after[: len(tok)], before)
    for w, ids in pieces.items():
        assert len(ids) >= 2
        assert torch.allclose(after[new.convert_tokens_to_ids(w)], before[ids].mean(0))
    assert model.get_output_embeddings().weight.shape[0] == len(new)  # the MLM decoder follows (tied)


def _tiny_pretraining(tmp_path, name: str, objective: dict):
    """A 40-step pretraining of a tiny BERT from scratch on 300 documents of fixture sentences."""
    from transferkit.config import load_pretrain_config

    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(sentence(rng, rng.choice(["positive", "negative"]))
                                            for _ in range(4)) for _ in range(300)), encoding="utf-8")
    return load_pretrain_config(raw={
        "name": name, "model": {"init": "scratch", "size": "tiny", "max_length": 32},
        "tokenizer": {"vocab_size": 120}, "corpus": {"sources": [str(corpus)], "heldout": 0.1},
        "objective": objective,
        "train": {"max_steps": 40, "batch_size": 16, "optimizer": {"lr": 1e-3}, "eval_every": 20, "log_every": 10},
        "output": {"dir": str(tmp_path / "{name}")}})


def test_pretrain_then_finetune_round_trip(tmp_path):
    from transformers import AutoModelForMaskedLM, pipeline

    from transferkit.config import load_config
    from transferkit.recipes import finetune, pretrain

    cfg = _tiny_pretraining(tmp_path, "pt", {"pair": "sop"})
    s = pretrain.run(cfg, progress=False)
    assert s["heldout_after"]["mlm_loss"] < s["heldout_before"]["mlm_loss"] - 0.5
    assert_declared_metrics(s["heldout_after"], "pretrain", pair=True)
    assert s["train"]["padding_fraction"] < 0.35 and s["model"]["vocab_size"] <= 120
    for f in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "metrics.json",
              "report.md", "report.html", "curves.png", "tokenizer/tokenizer.json"):
        assert (tmp_path / "pt" / f).is_file(), f
    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path / "pt" / "model")
    assert mlm.config.vocab_size == s["model"]["vocab_size"]
    fill = pipeline("fill-mask", model=str(tmp_path / "pt" / "model"), device="cpu")
    assert len(fill("the movie was [MASK]")) == 5

    data = write_csv(tmp_path / "reviews.csv", make_rows(240, seed=1))
    ft = load_config(raw=tiny_config(tmp_path / "pt", data, tmp_path, name="ft", model={"max_length": 32}))
    summary = finetune.run(ft, progress=False)
    assert summary["test"]["accuracy"] >= 0.8
    assert (tmp_path / "ft" / "model" / "config.json").is_file()


def test_causal_pretraining_gives_a_decoder_that_causal_lm_fine_tuning_starts_from(tmp_path):
    from transformers import AutoModelForCausalLM, pipeline

    from transferkit.config import load_config
    from transferkit.recipes import finetune, pretrain

    cfg = _tiny_pretraining(tmp_path, "clm", {"kind": "causal"})
    s = pretrain.run(cfg, progress=False)
    b, a = s["heldout_before"], s["heldout_after"]
    assert a["lm_loss"] < b["lm_loss"] - 0.5 and a["perplexity"] == pytest.approx(math.exp(a["lm_loss"]), rel=1e-6)
    assert_declared_metrics(a, "pretrain/causal")
    assert "next-token accuracy" in (tmp_path / "clm" / "report.md").read_text()
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "clm" / "model")
    assert lm.config.is_decoder and type(lm).__name__ == "BertLMHeadModel"
    gen = pipeline("text-generation", model=str(tmp_path / "clm" / "model"), device="cpu")
    assert len(gen("the movie was", max_new_tokens=3, do_sample=False)[0]["generated_text"]) > len("the movie was")

    # the decoder pretrained here starts a causal_lm fine-tuning
    rows = [{"text": r["text"], "reply": "great" if r["label"] == "positive" else "awful"}
            for r in make_rows(120, seed=2)]
    data = write_csv(tmp_path / "dialogue.csv", rows)
    raw = tiny_config(tmp_path / "clm", {"source": str(data), "label_column": "reply"}, tmp_path, name="chat",
                      model={"max_length": 32}, task={"type": "causal_lm", "causal_lm": {"max_target_length": 8},
                                                      "generation": {"max_new_tokens": 2}})
    raw["train"]["epochs"] = 1
    summary = finetune.run(load_config(raw=raw), progress=False)
    assert summary["test"]["reply_tokens"] > 0 and math.isfinite(summary["test"]["perplexity"])


def test_resume_reads_the_runs_own_tokenizer_instead_of_training_it_again(tmp_path, monkeypatch):
    """HF tokenizers' WordPiece trainer can give other ids in another process: a resumed run must not retrain."""
    from transferkit.config import load_pretrain_config
    from transferkit.data.corpus import load_corpus
    from transferkit.modeling import vocab
    from transferkit.recipes import pretrain

    rng = random.Random(0)
    corpus_file = tmp_path / "c.txt"
    corpus_file.write_text("\n\n".join(sentence(rng, "positive") for _ in range(50)), encoding="utf-8")
    cfg = load_pretrain_config(raw={"model": {"init": "scratch", "size": "tiny", "max_length": 32},
                                    "tokenizer": {"vocab_size": 120}, "corpus": {"sources": [str(corpus_file)]}})
    corpus = load_corpus(cfg.corpus.sources, heldout=0.1)
    trained, _, _ = pretrain._tokenizer(cfg, corpus)
    trained.save_pretrained(tmp_path / "tok")
    monkeypatch.setattr(vocab, "train_wordpiece", lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    again, _, _ = pretrain._tokenizer(cfg, corpus, saved=tmp_path / "tok")
    assert again.get_vocab() == trained.get_vocab()


def test_pretrain_config_and_corpus_errors(tmp_path):
    from transferkit.config import load_pretrain_config
    from transferkit.data.corpus import load_corpus
    from transferkit.errors import ConfigError, DataError

    with pytest.raises(ConfigError) as e:
        load_pretrain_config(raw={"model": {"init": "pretrained"}, "corpus": {"sources": ["x"]},
                                  "objective": {"pair": "nxp"}})
    assert "init: pretrained needs `path`" in str(e.value) and "objective -> pair" in str(e.value)
    with pytest.raises(ConfigError, match="mask_fraction \\+ random_fraction must be at most 1"):
        load_pretrain_config(raw={"corpus": {"sources": ["x"]}, "objective": {"mask_fraction": 0.95}})
    with pytest.raises(DataError, match="Did you mean 'peoples_daily'"):
        load_corpus(["peoples_dialy"])
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"body": "some text"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c.jsonl:1: no field 'text'"):
        load_corpus([str(bad)])


def test_learning_curve_runs_every_point_and_reuses_finished_runs(tiny_model, tmp_path):
    import json

    from transferkit.config import load_config
    from transferkit.recipes.curve import run_curve

    data = write_csv(tmp_path / "reviews.csv", make_rows(300, seed=2))
    cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path, name="curve", train={"epochs": 2}))
    res = run_curve(cfg, [40, 0], [1, 2], seeds_all=[1], progress=False)
    all_n = res["train_sizes"]["all"]
    assert res["train_sizes"]["40"] == 40 and 230 <= all_n <= 240  # 80% of 300 after de-duplication
    rows = res["results"]
    assert set(rows["40"]) == {str(tiny_model), "scratch"} and rows["40"]["scratch"]["n"] == 2
    assert rows["all"][str(tiny_model)]["n"] == 1
    vals = rows["40"][str(tiny_model)]["values"]
    assert rows["40"][str(tiny_model)]["mean"] == pytest.approx(sum(vals) / 2)
    for f in ("curve.json", "curve.md", "curve.png", "main_n40_s2/metrics.json"):
        assert (tmp_path / "curve" / f).is_file(), f
    assert f"| {all_n} |" in (tmp_path / "curve" / "curve.md").read_text()
    stamp = (tmp_path / "curve" / "main_n40_s1" / "metrics.json").stat().st_mtime
    assert run_curve(cfg, [40], [1], progress=False)["results"]["40"]["scratch"]["values"] == \
        rows["40"]["scratch"]["values"][:1]
    assert (tmp_path / "curve" / "main_n40_s1" / "metrics.json").stat().st_mtime == stamp  # reused, not rerun
    assert json.loads((tmp_path / "curve" / "curve.json").read_text())["sizes"] == [40]


def test_pretrain_checks_before_the_run_folder_exists(tiny_model, tmp_path):
    """A weightless checkpoint to continue and a folder of the user's files: refused, nothing written."""
    import shutil

    from typer.testing import CliRunner

    from transferkit.cli import app
    from conftest import tree_snapshot, write_config

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(sentence(__import__("random").Random(i), "positive") for i in range(60)))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for model, out, needle in (({"init": "pretrained", "path": str(broken)}, str(tmp_path / "runs/{name}"),
                                "has a config.json but no weights"),
                               ({"init": "scratch", "size": "tiny"}, str(mine), "is not a transferkit run folder")):
        cfg = write_config(tmp_path / "pt.yaml", {"name": "pt", "model": {**model, "max_length": 32},
                                                  "tokenizer": {"vocab_size": 120},
                                                  "corpus": {"sources": [str(corpus)]}, "output": {"dir": out}})
        before = tree_snapshot(tmp_path)
        result = CliRunner().invoke(app, ["pretrain", str(cfg), "-q", "--overwrite"])
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
        assert tree_snapshot(tmp_path) == before
