"""seq2seq through the one loop, on tiny BERT2BERT models: targets, loss, generation, runs, predict, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_rows, tiny_config, write_config, write_csv
from transferkit.data.sources import Examples

CLI = [sys.executable, "-m", "transferkit.cli"]
LAUNCH = [sys.executable, str(Path(__file__).with_name("launch.py"))]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _pairs_csv(path: Path, n: int = 400) -> Path:
    """Text -> the word for its sentiment: learnable by a tiny model only through cross-attention."""
    rows = make_rows(n, seed=3)
    return write_csv(path, [{"text": r["text"], "target": "great" if r["label"] == "positive" else "awful"}
                            for r in rows])


def _cfg(tiny_model, csv: Path, root: Path, **task) -> dict:
    cfg = tiny_config(tiny_model, {"source": str(csv), "label_column": "target"}, root / "runs",
                      task={"type": "seq2seq", "seq2seq": {"max_target_length": 8},
                            "generation": {"max_new_tokens": 6}, **task})
    cfg["train"].update(epochs=6, checkpoint_every=10)
    return cfg


def _task_and_model(tiny_model, **gen):
    from transformers import AutoTokenizer

    from transferkit.tasks.seq2seq import Seq2SeqTask

    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = Seq2SeqTask(max_length=32, max_target_length=8, generation={"max_new_tokens": 6, **gen})
    torch.manual_seed(0)
    model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=None, tokenizer=tok)
    return task, model.eval(), tok


def _split(src: list[str], tgt: list[str | None]) -> Examples:
    return Examples(texts=src, labels=tgt, origin=[f"row {i}" for i in range(len(src))], name="t", stratify=False)


def test_labels_are_the_target_and_the_decoder_reads_them_shifted_right_behind_the_start_token(tiny_model):
    task, model, tok = _task_and_model(tiny_model)
    enc = task.encode(tok, _split(["the movie was great", "dull"], ["great film", "awful"]))
    target = tok("great film")["input_ids"]  # [CLS] great film [SEP]
    assert enc.features[0]["labels"] == target[1:]  # [CLS] is the decoder start, not a label
    batch = task.collate(enc.features)
    assert batch["labels"].shape == (2, len(target) - 1)
    assert (batch["labels"][1, len(tok("awful")["input_ids"]) - 1:] == -100).all()  # padding ignored
    seen = {}
    real_forward = model.forward

    def spy(**kw):
        seen.update(kw)
        return real_forward(**kw)

    model.forward = spy
    task.forward(model, batch)
    dec = seen["decoder_input_ids"]
    assert dec[0, 0] == model.config.decoder_start_token_id == tok.cls_token_id
    assert dec[0, 1:].tolist() == batch["labels"][0, :-1].tolist()
    assert (dec[1][seen["decoder_attention_mask"][1] == 0] == tok.pad_token_id).all()


def test_padding_does_not_change_the_loss(tiny_model):
    task, model, tok = _task_and_model(tiny_model)
    short = task.encode(tok, _split(["the movie was great"], ["great"])).features
    long = task.encode(tok, _split(["a plot with a story and the acting was so very dull"],
                                   ["awful film with a boring script"])).features
    with torch.no_grad():
        b1 = task.collate(short)
        alone = task.loss(task.forward(model, b1), b1)
        b2 = task.collate(short + long)  # the first row is now padded on both sides
        logits = task.forward(model, b2)
        n = b1["labels"].shape[1]
        row = torch.nn.functional.cross_entropy(logits[0, :n], b2["labels"][0, :n])
        pooled = task.loss(logits, b2)
        manual = torch.nn.functional.cross_entropy(logits[b2["labels"] != -100], b2["labels"][b2["labels"] != -100])
    assert float(row) == pytest.approx(float(alone), abs=1e-5)
    assert float(pooled) == pytest.approx(float(manual), abs=1e-6)


def test_generation_stops_at_the_end_token_and_respects_max_new_tokens(tiny_model):
    task, model, tok = _task_and_model(tiny_model, max_new_tokens=3)
    batch = task.collate(task.encode(tok, _split(["the movie was great", "dull plot"], [None, None])).features)
    rows = task.generate(model, batch)
    assert len(rows) == 2 and all(len(r) <= 3 for r in rows)
    # an end token as the most likely first token: generation stops there, nothing is returned after it
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.decoder.cls.predictions.decoder.bias.fill_(0).index_fill_(0, torch.tensor([eos]), 1e4)
        model.decoder.cls.predictions.bias = model.decoder.cls.predictions.decoder.bias
    task.generation["max_new_tokens"] = 6
    assert [len(r) for r in task.generate(model, batch)] == [0, 0]


def test_one_beam_equals_a_hand_written_greedy_decode(tiny_model):
    task, model, tok = _task_and_model(tiny_model, max_new_tokens=5, num_beams=1)
    batch = task.collate(task.encode(tok, _split(["the movie was great", "a dull boring plot"], [None, None])).features)
    got = task.generate(model, batch)
    for i in range(2):
        ids = batch["input_ids"][i:i + 1][:, : int(batch["attention_mask"][i].sum())]
        dec = torch.tensor([[model.config.decoder_start_token_id]])
        out = []
        with torch.no_grad():
            for _ in range(5):
                nxt = int(model(input_ids=ids, decoder_input_ids=dec).logits[0, -1].argmax())
                if nxt == model.config.eos_token_id:
                    break
                out.append(nxt)
                dec = torch.cat([dec, torch.tensor([[nxt]])], dim=1)
        assert got[i].tolist() == out


def test_a_seq2seq_run_learns_generates_reports_and_predicts(tiny_model, tmp_path):
    csv = _pairs_csv(tmp_path / "pairs.csv")
    cfg = write_config(tmp_path / "s2s.yaml", _cfg(tiny_model, csv, tmp_path))
    # 12 epochs: at 6 the run sat at the edge (test ROUGE-L 1.0 alone, 0.53 in the full suite)
    done = subprocess.run(CLI + ["finetune", str(cfg), "-q", "train.optimizer.lr=3e-3", "train.epochs=12"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/tiny"
    m = json.loads((run / "metrics.json").read_text())
    assert m["task"] == "seq2seq" and m["metric"] == "rougeL"
    assert m["test"]["rougeL"] >= 0.9 and m["test"]["chrf"] >= 90
    assert set(m["transfer"]["fine_tuned"]) >= {"rougeL", "rouge1", "rouge2", "bleu", "chrf"}
    assert len(m["samples"]) == 20 and {"input", "reference", "output"} == set(m["samples"][0])
    report = (run / "report.md").read_text()
    assert "## Test samples (first 20)" in report and "| input | reference | output |" in report
    task = json.loads((run / "model/task.json").read_text())
    assert task["task"] == "seq2seq" and task["generation"]["max_new_tokens"] == 6
    p = subprocess.run(CLI + ["predict", str(run)], input="the movie was really superb and charming\n"
                       "boring and dull and tedious\n", env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert [json.loads(x)["text"] for x in p.stdout.splitlines()] == ["great", "awful"]
    # the folder is a plain transformers seq2seq model: generate() needs nothing from transferkit
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    plain = AutoModelForSeq2SeqLM.from_pretrained(run / "model")
    tok = AutoTokenizer.from_pretrained(run / "model")
    ids = plain.generate(**tok(["boring and dull and tedious"], return_tensors="pt"), max_new_tokens=6)
    assert tok.decode(ids[0], skip_special_tokens=True) == "awful"


def test_generation_and_seq2seq_settings_are_checked_before_a_run(tiny_model, tmp_path):
    from transferkit.config import load_config
    from transferkit.errors import ConfigError

    csv = _pairs_csv(tmp_path / "pairs.csv", 40)
    cfg = _cfg(tiny_model, csv, tmp_path)
    cfg["task"]["generation"] = {"top_k": 5}
    with pytest.raises(ConfigError, match=r"task -> generation.*do_sample: true"):
        load_config(write_config(tmp_path / "a.yaml", cfg))
    cfg = _cfg(tiny_model, csv, tmp_path)
    cfg["task"]["type"] = "text_classification"
    with pytest.raises(ConfigError, match=r"task -> seq2seq: settings of seq2seq, but task.type is text_classification"):
        load_config(write_config(tmp_path / "b.yaml", cfg))
    cfg = _cfg(tiny_model, csv, tmp_path)
    cfg["early_stopping"] = {"metric": "accuracy"}
    with pytest.raises(ConfigError, match=r"'accuracy' is not a validation metric of this task.*rougeL"):
        load_config(write_config(tmp_path / "c.yaml", cfg))


def test_the_decoder_may_have_its_own_checkpoint_and_tokenizer(tiny_model, tmp_path):
    """An encoder and a decoder with different vocabularies: the target tokenizer is the decoder's, saved in
    model/decoder_tokenizer and used by predict."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertTokenizerFast

    dec_dir = tmp_path / "decoder"
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(["好 极 了 很 糟 糕"] * 20, trainers.WordPieceTrainer(
        vocab_size=40, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", model_max_length=32)
    fast.save_pretrained(dec_dir)
    BertForMaskedLM(BertConfig(vocab_size=len(fast), hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=32)).save_pretrained(dec_dir)
    rows = make_rows(300, seed=4)
    csv = write_csv(tmp_path / "zh.csv", [{"text": r["text"], "target": "好极了" if r["label"] == "positive" else "很糟糕"}
                                          for r in rows])
    cfg = write_config(tmp_path / "s2s.yaml", _cfg(tiny_model, csv, tmp_path, seq2seq={
        "max_target_length": 8, "decoder": str(dec_dir)}))
    done = subprocess.run(CLI + ["finetune", str(cfg), "-q", "train.optimizer.lr=3e-3", "train.epochs=8"],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs/tiny"
    saved = AutoTokenizer.from_pretrained(run / "model/decoder_tokenizer")
    assert len(saved) == len(fast) != len(AutoTokenizer.from_pretrained(run / "model"))
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["chrf"] >= 90  # characters of the Chinese targets, joined without WordPiece's spaces
    assert {s["output"] for s in m["samples"]} <= {"好极了", "很糟糕"}
    from transferkit.deploy.predictor import Predictor

    out = Predictor.load(run).predict(["the movie was really superb and charming", "boring and dull and tedious"])
    assert [o["text"] for o in out] == ["好极了", "很糟糕"]


def test_a_killed_seq2seq_run_resumes_to_the_uninterrupted_result(tiny_model, tmp_path):
    csv = _pairs_csv(tmp_path / "pairs.csv", 240)
    cfg = write_config(tmp_path / "s2s.yaml", _cfg(tiny_model, csv, tmp_path))
    base = ["train.optimizer.lr=3e-3", "train.epochs=3", "train.checkpoint_every=2", "-q"]
    full = subprocess.run(CLI + ["finetune", str(cfg), "name=full", *base], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "runs/killed"
    proc = subprocess.Popen(LAUNCH + ["finetune", str(cfg), "name=killed", *base, "methods.slow_steps.seconds=0.25"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        if any(json.loads(x)["step"] >= 15 for x in lines):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (run / "metrics.json").exists()
    res = subprocess.run(LAUNCH + ["finetune", str(cfg), "name=killed", *base, "--resume"], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a = json.loads((tmp_path / "runs/full/metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert b["train"]["steps"] == a["train"]["steps"]
    assert b["test"]["loss"] == pytest.approx(a["test"]["loss"], abs=1e-6)
    assert b["test"]["rougeL"] == a["test"]["rougeL"] and b["samples"] == a["samples"]
