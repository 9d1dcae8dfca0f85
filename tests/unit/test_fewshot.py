"""Few labels or none: k-per-class sampling, the prompt (cloze) head and its verbalizer, contextual calibration,
zero-shot by embeddings, and the contrastive (SetFit-style) method."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import make_rows, tiny_config, write_config, write_csv
from transferkit.cli import app
from transferkit.config import DataConfig, load_config
from transferkit.data.prepare import load_splits
from transferkit.errors import ConfigError, DataError

runner = CliRunner()


# ---------------------------------------------------------------- sampling

def test_k_per_class_exact_seeded_and_only_from_the_training_split(tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(300, seed=4, labels=("a", "b", "c")))
    s1 = load_splits(DataConfig(source=str(data), train_per_class=8, validation_per_class=4, train_sample_seed=1))
    assert Counter(s1.train.labels) == {"a": 8, "b": 8, "c": 8}
    assert Counter(s1.validation.labels) == {"a": 4, "b": 4, "c": 4}
    full = load_splits(DataConfig(source=str(data)))
    assert len(s1.test) == len(full.test) and s1.test.texts == full.test.texts  # the test split stays whole
    assert set(s1.train.texts) <= set(full.train.texts)  # drawn from the training split only
    assert not set(s1.train.texts) & (set(full.validation.texts) | set(full.test.texts))
    again = load_splits(DataConfig(source=str(data), train_per_class=8, train_sample_seed=1))
    other = load_splits(DataConfig(source=str(data), train_per_class=8, train_sample_seed=2))
    assert again.train.texts == s1.train.texts and other.train.texts != s1.train.texts
    with pytest.raises(DataError, match=r"fewer than 200 examples of label\(s\) 'a' \(\d+\)"):
        load_splits(DataConfig(source=str(data), train_per_class=200))


def test_train_per_class_and_train_limit_exclude_each_other():
    with pytest.raises(ConfigError, match="either train_limit .* or train_per_class"):
        load_config(raw={"data": {"source": "rotten_tomatoes", "train_limit": 100, "train_per_class": 8}})


# ---------------------------------------------------------------- verbalizer and calibration

def test_verbalizer_words_map_to_single_vocabulary_ids(tiny_mlm):
    from transformers import AutoTokenizer

    from transferkit.tasks.prompt import verbalizer_ids

    tok = AutoTokenizer.from_pretrained(tiny_mlm)
    ids = verbalizer_ids(tok, {"positive": "great", "negative": "awful"}, ["negative", "positive"])
    assert ids == [tok.convert_tokens_to_ids("awful"), tok.convert_tokens_to_ids("great")]
    assert len(set(ids)) == 2 and tok.unk_token_id not in ids
    long = "greatawfulness"
    assert len(tok.tokenize(long)) > 1
    with pytest.raises(ConfigError, match=r"verbalizer -> positive: 'greatawfulness' is not one token .* splits into"):
        verbalizer_ids(tok, {"positive": long, "negative": "awful"}, ["negative", "positive"])
    with pytest.raises(ConfigError, match="labels 'negative' and 'positive' map to the same token"):
        verbalizer_ids(tok, {"positive": "great", "negative": "great"}, ["negative", "positive"])
    with pytest.raises(ConfigError, match=r"no word for label\(s\) \['neutral'\]"):
        verbalizer_ids(tok, {"positive": "great", "negative": "awful"}, ["negative", "neutral", "positive"])


def test_contextual_calibration_equals_a_hand_computation():
    from transferkit.evaluation.zeroshot import contextual_calibration

    p = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    p_cf = np.array([0.8, 0.2])
    # W = diag(1 / p_cf): [0.875, 1.5], [0.5, 3.0], [1.125, 0.5]; then a softmax per row
    want = np.array([[np.exp(0.875), np.exp(1.5)], [np.exp(0.5), np.exp(3.0)], [np.exp(1.125), np.exp(0.5)]])
    want /= want.sum(axis=1, keepdims=True)
    got = contextual_calibration(p, p_cf)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got.argmax(1).tolist() == [1, 1, 0]  # the bias toward label 0 is taken out of the first row
    np.testing.assert_allclose(contextual_calibration(p, p_cf * 3), got)  # p_cf is renormalised


def test_zero_shot_by_embeddings_is_cosine_similarity(tiny_model):
    from transformers import AutoModel, AutoTokenizer

    from transferkit.evaluation.zeroshot import TEMPERATURE, embedding_zero_shot

    tok = AutoTokenizer.from_pretrained(tiny_model)
    enc = AutoModel.from_pretrained(tiny_model).eval()
    texts = ["the movie was great", "a dull and boring plot", "charming"]
    labels, desc = ["negative", "positive"], {"positive": "wonderful superb"}
    got = embedding_zero_shot(enc, tok, texts, labels, desc, max_length=32)

    def vec(t):
        b = tok(t, return_tensors="pt")
        with torch.no_grad():
            return enc(**b).last_hidden_state[0].mean(0).numpy()  # one text: no padding, mean over its tokens

    T = np.stack([vec(t) for t in texts])
    L = np.stack([vec("negative"), vec("wonderful superb")])  # no description: the label name itself
    cos = (T / np.linalg.norm(T, axis=1, keepdims=True)) @ (L / np.linalg.norm(L, axis=1, keepdims=True)).T
    want = np.exp(cos / TEMPERATURE)
    np.testing.assert_allclose(got, want / want.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- the prompt head through finetune

def _prompt_cfg(model, data, tmp_path, **extra):
    return tiny_config(model, data, tmp_path / "runs",
                       task={"head": "prompt", "prompt": {"template": "{text} so {mask} .",
                                                          "verbalizer": {"positive": "great", "negative": "awful"}}},
                       **extra)


def test_prompt_head_scores_the_verbalizer_words_at_the_mask(tiny_mlm, tmp_path):
    from transformers import AutoTokenizer, BertForMaskedLM

    from transferkit.data.sources import Examples
    from transferkit.tasks import build_task

    cfg = load_config(raw=_prompt_cfg(tiny_mlm, write_csv(tmp_path / "d.csv", make_rows(20)), tmp_path))
    task = build_task(cfg)
    assert type(task).__name__ == "PromptClassificationTask"
    task.labels = ["negative", "positive"]
    tok = AutoTokenizer.from_pretrained(tiny_mlm)
    texts = ["the plot was dull", "a really wonderful and charming film with a great cast"]
    enc = task.encode(tok, Examples(texts=texts, labels=["negative", "positive"], origin=["a", "b"]))
    for f, t in zip(enc.features, texts):
        assert f["input_ids"][f["mask_pos"]] == tok.mask_token_id
        assert tok.decode(f["input_ids"]).startswith("[CLS] " + t) and "so [MASK]" in tok.decode(f["input_ids"])
    model = task.build_model(str(tiny_mlm), init="pretrained", size=None, dropout=None, tokenizer=tok).eval()
    batch = task.collate(enc.features)
    with torch.no_grad():
        got = task.forward(model, batch)
        full = BertForMaskedLM.from_pretrained(tiny_mlm).eval()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    want = full[torch.arange(2), batch["mask_pos"]][:, [tok.convert_tokens_to_ids("awful"),
                                                         tok.convert_tokens_to_ids("great")]]
    assert got.shape == (2, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # a long text is cut, the pattern and its mask are kept
    long = task.encode(tok, Examples(texts=[" ".join(["film"] * 200)], labels=["positive"], origin=["c"]))
    f = long.features[0]
    assert len(f["input_ids"]) == cfg.model.max_length and f["input_ids"][f["mask_pos"]] == tok.mask_token_id


def test_prompt_finetune_reports_zero_shot_rows_and_predict_reloads_it(tiny_mlm, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(120, seed=3))
    cfg = write_config(tmp_path / "p.yaml", _prompt_cfg(tiny_mlm, data, tmp_path, compare={"zero_shot": True,
                                                                                           "linear_probe": False}))
    res = runner.invoke(app, ["finetune", str(cfg), "-q"])
    assert res.exit_code == 0, res.stderr
    run = tmp_path / "runs" / "tiny"
    m = json.loads((run / "metrics.json").read_text())
    zs = m["transfer"]
    assert {"majority", "zero_shot_embedding", "zero_shot_cloze", "zero_shot_cloze_calibrated", "fine_tuned"} <= set(zs)
    for k in ("zero_shot_embedding", "zero_shot_cloze", "zero_shot_cloze_calibrated"):
        assert 0.0 <= zs[k]["accuracy"] <= 1.0
    base = json.loads((run / "baselines.json").read_text())
    p_cf = base["zero_shot_cloze_calibrated"]["content_free_probabilities"]
    assert set(p_cf) == {"negative", "positive"} and sum(p_cf.values()) == pytest.approx(1.0)
    assert "Zero-shot: cloze prompt, contextually calibrated" in (run / "report.md").read_text()
    task = json.loads((run / "model" / "task.json").read_text())
    assert task["head"] == "prompt" and task["verbalizer"] == {"positive": "great", "negative": "awful"}
    inp = tmp_path / "in.txt"
    inp.write_text("the movie was great\nawful and dull\n")
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["predict", str(run), "--input", str(inp), "--output", str(out)])
    assert res.exit_code == 0, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["label"] in ("negative", "positive") for r in rows)


def test_prompt_head_refuses_a_model_without_mlm_head_and_bad_settings(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    cfg = write_config(tmp_path / "p.yaml", _prompt_cfg(tiny_model, data, tmp_path))
    res = runner.invoke(app, ["finetune", str(cfg)])
    assert res.exit_code == 2, res.stderr
    assert "has no masked-LM head" in res.stderr and not (tmp_path / "runs" / "tiny").exists()
    with pytest.raises(ConfigError, match="task -> prompt -> verbalizer: head: prompt needs a word per label"):
        load_config(raw=tiny_config(tiny_model, data, tmp_path, task={"head": "prompt"}))
    with pytest.raises(ConfigError, match=r"task -> prompt -> template: .*\{mask\} exactly once"):
        load_config(raw=tiny_config(tiny_model, data, tmp_path, task={"head": "prompt", "prompt": {
            "template": "{text} no mask", "verbalizer": {"positive": "great", "negative": "awful"}}}))
    with pytest.raises(ConfigError, match="compare -> zero_shot: zero-shot baselines are for single-label"):
        load_config(raw=tiny_config(tiny_model, data, tmp_path, task={"multilabel": True},
                                    compare={"zero_shot": True}))


# ---------------------------------------------------------------- contrastive (SetFit-style)

def test_contrastive_pairs_are_balanced_whole_and_seeded():
    from transferkit.methods.contrastive import pair_batches

    labels = [0] * 8 + [1] * 8 + [2] * 8
    batches = pair_batches(labels, pairs=20, batch_pairs=8, seed=3, epoch=0)
    flat = [i for b in batches for i in b]
    pairs = list(zip(flat[0::2], flat[1::2]))
    assert len(pairs) == 24 * 20 and all(len(b) % 2 == 0 for b in batches)
    same = sum(labels[a] == labels[b] for a, b in pairs)
    assert same == len(pairs) // 2  # half positive, half negative
    assert all(a != b for a, b in pairs)  # nobody is its own partner when its class has others
    assert Counter(a for a, _ in pairs) == {i: 20 for i in range(24)}  # every example anchors `pairs` pairs
    assert pair_batches(labels, 20, 8, seed=3, epoch=0) == batches
    assert pair_batches(labels, 20, 8, seed=3, epoch=1) != batches


def test_chunks_never_split_a_pair():
    from transferkit.training.batching import chunk_batch

    lengths = [30, 7, 9, 31, 5, 6, 30, 30, 8, 2]
    batch = list(range(10))
    for tokens in (16, 40, 64, 100):
        chunks = chunk_batch(batch, lengths, tokens, multiple=2)
        assert [i for c in chunks for i in c] == batch
        assert all(len(c) % 2 == 0 for c in chunks)
        assert all(max(lengths[i] for i in c) * len(c) <= max(tokens, 2 * max(lengths[i] for i in c)) for c in chunks)


def test_logistic_head_in_a_softmax_layer_gives_the_same_probabilities():
    from sklearn.linear_model import LogisticRegression

    from transferkit.methods.contrastive import fitted_head

    rng = np.random.default_rng(0)
    for n_labels in (2, 3):
        x = rng.normal(size=(60, 5))
        y = rng.integers(0, n_labels, size=60)
        clf = LogisticRegression(max_iter=1000).fit(x, y)
        w, b = fitted_head(clf.coef_, clf.intercept_, clf.classes_, n_labels)
        z = x @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(p / p.sum(1, keepdims=True), clf.predict_proba(x), rtol=1e-6, atol=1e-9)


def test_contrastive_method_trains_the_encoder_by_pairs_and_fits_the_head(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(200, seed=5))
    raw = tiny_config(tiny_model, {"source": str(data), "train_per_class": 8}, tmp_path / "runs",
                      task={"pooling": "mean"}, train={"optimizer": {"lr": 1e-2}, "epochs": 2, "batch_size": 8, "seed": 1, "log_every": 5},
                      methods={"contrastive": {"pairs": 10}})
    res = runner.invoke(app, ["finetune", str(write_config(tmp_path / "c.yaml", raw)), "-q"])
    assert res.exit_code == 0, res.stderr
    m = json.loads((tmp_path / "runs" / "tiny" / "metrics.json").read_text())
    assert m["data"]["sizes"]["train"] == 16
    # 16 examples x 10 pairs = 160 pairs = 320 example passes per epoch, 4 pairs per micro-batch: 40 steps
    assert m["train"]["steps"] == 80
    (desc,) = [d for d in m["methods"] if d["method"] == "contrastive"]
    assert desc["head"] == "logistic regression" and 0.5 <= desc["train_accuracy"] <= 1.0
    bad = tiny_config(tiny_model, data, tmp_path / "runs", methods={"contrastive": {}})
    with pytest.raises(ConfigError, match="methods -> contrastive: needs task.pooling: mean"):
        load_config(raw=bad)
    with pytest.raises(ConfigError, match="must be even"):
        load_config(raw={**bad, "task": {"pooling": "mean"}, "train": {"batch_size": 7}})


# ---------------------------------------------------------------- the benchmark recipe

def test_fewshot_runs_every_method_on_the_same_samples_and_resumes(tiny_model, tiny_mlm, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(160, seed=6))
    raw = _prompt_cfg(tiny_model, data, tmp_path)
    raw["task"]["pooling"] = "mean"
    raw["fewshot"] = {"shots": [4], "seeds": [1, 2], "mlm": str(tiny_mlm),
                      "overrides": {**{m: ["train.max_steps=4"] for m in ("head_only", "full", "full_desc", "prompt")},
                                    "contrastive": ["methods.contrastive.pairs=2"]}}
    raw["task"].pop("head")  # the base runs use the linear head; the prompt method switches it on
    cfg = write_config(tmp_path / "f.yaml", raw)
    res = runner.invoke(app, ["fewshot", str(cfg), "-q"])
    assert res.exit_code == 0, res.stderr
    root = tmp_path / "runs" / "tiny"
    rows = [json.loads(x) for x in (root / "fewshot.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["k"] == 4]
    assert sorted({r["method"] for r in trained}) == ["contrastive", "full", "full_desc", "head_only", "prompt"]
    assert len(trained) == 10 and all(0 <= r["accuracy"] <= 1 and r["wall_s"] > 0 for r in trained)
    assert {r["method"] for r in rows if r["k"] == 0} == {"majority", "zero_shot_embedding", "zero_shot_cloze",
                                                         "zero_shot_cloze_calibrated"}
    # the same 4 + 4 training (and validation) examples for every method of a seed, other ones for another seed
    from transferkit.recipes.rundir import read_marker

    data_of = {(r["method"], r["seed"]): read_marker(root / "runs" / f"{r['method']}_k4_s{r['seed']}")["data"]
               for r in trained}
    assert len({v for (m, s), v in data_of.items() if s == 1}) == 1
    assert data_of[("full", 1)] != data_of[("full", 2)]
    m1 = json.loads((root / "runs" / "full_k4_s1" / "metrics.json").read_text())
    assert m1["data"]["sizes"]["train"] == 8 and m1["data"]["sizes"]["validation"] == 8
    assert not (root / "runs" / "full_k4_s1" / "model").exists()  # metrics only
    assert not (root / "runs" / "full_k4_s1" / "checkpoints").exists()
    assert "| contrastive |" in (root / "fewshot.md").read_text() and (root / "fewshot.png").stat().st_size > 0
    # a rerun trains nothing again
    before = (root / "fewshot.jsonl").read_text()
    res = runner.invoke(app, ["fewshot", str(cfg), "-q"])
    assert res.exit_code == 0, res.stderr
    assert (root / "fewshot.jsonl").read_text() == before
    bad = runner.invoke(app, ["fewshot", str(cfg), "--methods", "full,setfit"])
    assert bad.exit_code == 2 and "unknown method(s) ['setfit']" in bad.stderr


def test_description_init_starts_the_head_at_the_zero_shot_classifier(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from transferkit.data.sources import Examples
    from transferkit.evaluation.zeroshot import embed, embedding_zero_shot
    from transferkit.methods.stack import MethodStack
    from transferkit.tasks import build_task

    data = write_csv(tmp_path / "d.csv", make_rows(40))
    desc = {"positive": "great wonderful superb", "negative": "awful boring dull"}
    cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path / "runs", task={"pooling": "mean",
                                      "label_descriptions": desc}, methods={"description_init": {}}))
    task = build_task(cfg)
    task.labels = ["negative", "positive"]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=None, tokenizer=tok)
    model = MethodStack.from_config(cfg.methods, run=cfg).prepare_model(model, task=task)
    e = embed(model.bert, tok, [desc["negative"], desc["positive"]], 32)
    w = model.classifier.weight.detach().numpy()
    n = np.linalg.norm(e, axis=1, keepdims=True)
    np.testing.assert_allclose(w, e / (n * n.mean() * 0.05), rtol=1e-5)
    assert float(model.classifier.bias.abs().max()) == 0.0
    texts = [r["text"] for r in make_rows(30, seed=9)]
    enc = task.encode(tok, Examples(texts=texts, labels=[None] * 30, origin=[str(i) for i in range(30)]))
    model.eval()
    with torch.no_grad():
        logits = task.forward(model, task.collate(enc.features)).numpy()
    x = embed(model.bert, tok, texts, 32)
    want = (x @ w.T)  # the head on the mean-pooled embedding, as the zero-shot classifier scales it
    np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-4)
    zs = embedding_zero_shot(model.bert, tok, texts, ["negative", "positive"], desc, 32)
    assert (logits.argmax(1) == zs.argmax(1)).all()  # the zero-shot classifier's ranking, for every text
    with pytest.raises(ConfigError, match="methods -> description_init: needs task.pooling: mean"):
        load_config(raw=tiny_config(tiny_model, data, tmp_path / "runs", methods={"description_init": {}}))


def test_budgets_take_the_nearest_k_and_user_overrides_come_last(tmp_path):
    from pathlib import Path

    from transferkit.recipes.fewshot import budget, method_overrides, split_fewshot

    _, fs = split_fewshot({"fewshot": {"budgets": {"full": {8: 40, 64: 120}},
                                       "overrides": {"full": ["train.max_steps=7"]}}}, "x.yaml")
    assert [budget(fs, "full", k) for k in (8, 16, 22, 23, 32, 64, 128)] == [40, 40, 40, 120, 120, 120, 120]
    assert budget(fs, "full_desc", 8) is None
    over = method_overrides(fs, "full", 16, 1, "n", Path(tmp_path))
    steps = [o for o in over if o.startswith("train.max_steps=")]
    assert steps == ["train.max_steps=100", "train.max_steps=40", "train.max_steps=7"]  # built-in, budget, user
    with pytest.raises(ConfigError, match="fewshot -> methods: unknown method"):
        split_fewshot({"fewshot": {"budgets": {"ful": {8: 4}}}}, "x.yaml")
    with pytest.raises(ConfigError, match="every budget is at least 1 optimizer step"):
        split_fewshot({"fewshot": {"budgets": {"full": {8: 0}}}}, "x.yaml")
