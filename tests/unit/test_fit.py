"""The loop on the tiny model: it learns, early stopping stops and restores the best checkpoint."""

import json

import pytest
import torch

from transferkit.config import load_config
from transferkit.recipes.finetune import run

from conftest import tiny_config, assert_declared_metrics


def test_finetune_learns_and_writes_run_folder(tiny_model, sentiment_csv, tmp_path):
    cfg = load_config(raw=tiny_config(tiny_model, sentiment_csv, tmp_path, train={"epochs": 4}))
    summary = run(cfg, progress=False)
    run_dir = tmp_path / "tiny"
    assert summary["test"]["accuracy"] >= 0.9, summary["test"]
    assert_declared_metrics(summary["test"], "text_classification")
    assert summary["transfer"]["majority"]["accuracy"] == pytest.approx(0.5, abs=0.05)
    for name in ("config.resolved.yaml", "metrics.json", "metrics.jsonl", "report.md", "report.html",
                 "curves.png", "confusion.png", "transfer.png", "model/task.json", "model/model.safetensors",
                 "model/tokenizer.json", "checkpoints/last.pt", "checkpoints/best_model.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = summary["train"]["steps"]
    assert [x["step"] for x in lines if x["split"] == "train"] == list(range(5, steps + 1, 5)) + (
        [steps] if steps % 5 else [])
    assert len([x for x in lines if x["split"] == "validation"]) == 4  # one per epoch
    assert json.loads((run_dir / "model/task.json").read_text())["labels"] == ["negative", "positive"]
    assert "| Fine-tuned (transferkit) |" in (run_dir / "report.md").read_text()


def test_early_stopping_stops_and_restores_best(tiny_model, sentiment_csv, tmp_path):
    # min_delta=1.0 makes the first evaluation the best one for sure: no later accuracy can beat it by a
    # whole point, so every later evaluation counts as no improvement, whatever the model learns.
    raw = tiny_config(tiny_model, sentiment_csv, tmp_path, train={"epochs": 10, "eval_every": 3},
                      early_stopping={"enabled": True, "metric": "accuracy", "min_delta": 1.0, "patience": 2})
    cfg = load_config(raw=raw)
    summary = run(cfg, progress=False)
    t = summary["train"]
    assert t["stopped_early"] is True
    assert t["best_step"] == 3 and t["steps"] == 9
    val = [x for x in map(json.loads, (tmp_path / "tiny/metrics.jsonl").read_text().splitlines())
           if x["split"] == "validation"]
    assert [v["step"] for v in val] == [3, 6, 9]
    assert val[0]["loss"] != pytest.approx(val[-1]["loss"], abs=1e-5)  # the weights did move after step 3
    # the shipped model is the step-3 one: its validation loss is the best one, not the last one
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.evaluate import evaluate

    pred = Predictor.load(tmp_path / "tiny")
    splits = load_splits(cfg.data)
    pred.task.check(splits.validation)
    metrics, _ = evaluate(pred.task, pred.model, pred.task.encode(pred.tokenizer, splits.validation))
    assert metrics["loss"] == pytest.approx(val[0]["loss"], abs=1e-5)
    best = torch.load(tmp_path / "tiny/checkpoints/best_model.pt", weights_only=True)
    assert torch.equal(best["classifier.weight"], pred.model.classifier.weight)


def test_metrics_only_runs_write_no_checkpoints_and_keep_the_same_best_step(tiny_model, sentiment_csv, tmp_path,
                                                                            monkeypatch):
    # output.keep: metrics keeps the best weights in memory instead of on disk: the same best step and the
    # same test metrics as a run with checkpoints, and no checkpoint is ever saved during training
    from transferkit.training import checkpoint as ckpt

    saved: dict[str, list[str]] = {}
    real = ckpt.atomic_save
    keep = "all"

    def counting(obj, path):
        saved.setdefault(keep, []).append(path.name)
        return real(obj, path)

    monkeypatch.setattr(ckpt, "atomic_save", counting)
    results = {}
    for keep in ("all", "metrics"):
        raw = tiny_config(tiny_model, sentiment_csv, tmp_path / keep, train={"epochs": 10, "eval_every": 3},
                          early_stopping={"enabled": True, "metric": "accuracy", "min_delta": 1.0, "patience": 2},
                          output={"dir": str(tmp_path / keep / "{name}"), "keep": keep})
        results[keep] = run(load_config(raw=raw), progress=False)
    assert not (tmp_path / "metrics/tiny/checkpoints").exists()
    assert "metrics" not in saved and {"last.pt", "best_model.pt"} <= set(saved["all"])
    assert results["metrics"]["train"]["best_step"] == results["all"]["train"]["best_step"] == 3
    assert results["metrics"]["test"]["loss"] == pytest.approx(results["all"]["test"]["loss"], abs=1e-6)


def test_freeze_all_but_head_trains_only_head(tiny_model, sentiment_csv, tmp_path):
    from transformers import BertModel

    cfg = load_config(raw=tiny_config(tiny_model, sentiment_csv, tmp_path, freeze={"mode": "all_but_head"},
                                      train={"epochs": 1}))
    summary = run(cfg, progress=False)
    assert summary["train"]["trainable_params"] == 32 * 2 + 2
    from transferkit.deploy.predictor import Predictor

    trained = Predictor.load(tmp_path / "tiny").model
    ref = BertModel.from_pretrained(tiny_model)
    assert torch.equal(trained.bert.encoder.layer[0].attention.self.query.weight,
                       ref.encoder.layer[0].attention.self.query.weight)


def test_scratch_comparison_in_transfer_report(tiny_model, sentiment_csv, tmp_path):
    cfg = load_config(raw=tiny_config(tiny_model, sentiment_csv, tmp_path, train={"epochs": 1},
                                      compare={"scratch": True, "linear_probe": True}))
    summary = run(cfg, progress=False)
    assert set(summary["transfer"]) == {"majority", "linear_probe", "fine_tuned", "scratch"}
    assert (tmp_path / "tiny/scratch/checkpoints/last.pt").is_file()
    assert not (tmp_path / "tiny/scratch/model").exists()  # only the fine-tuned model ships
    report = (tmp_path / "tiny/report.md").read_text()
    assert "| Same architecture from scratch |" in report and "Pretraining is worth" in report


def test_length_grouped_and_token_budget_batches_keep_accuracy(tiny_model, tmp_path):
    """Grouping by length (and a token budget) changes which examples share a batch, not what is learned:
    test accuracy stays within tolerance of plain fixed-size random batches."""
    from conftest import make_rows, write_csv

    data = write_csv(tmp_path / "reviews.csv", make_rows(480, seed=3))
    acc = {}
    for name, batching in {"random": {"strategy": "random"}, "grouped": {"strategy": "length_grouped"},
                           "budget": {"strategy": "length_grouped", "max_tokens": 160}}.items():
        cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path, name=name,
                                          train={"epochs": 3, "batching": batching}))
        acc[name] = run(cfg, progress=False)["test"]["accuracy"]
    assert min(acc.values()) >= 0.85, acc
    assert max(acc.values()) - min(acc.values()) <= 0.1, acc


def test_chunked_batches_give_the_same_update(tiny_model, tmp_path):
    """train.batching.chunk_tokens only bounds memory: with dropout off, the parameters after a few steps
    match those of whole batches up to float rounding."""
    import torch
    from transformers import AutoTokenizer

    from conftest import make_rows
    from transferkit.config import EarlyStoppingConfig, TrainConfig
    from transferkit.data.sources import Examples
    from transferkit.tasks.classification import ClassificationTask
    from transferkit.training.loop import fit

    rows = make_rows(64, seed=5)
    data = Examples(texts=[r["text"] for r in rows], labels=[r["label"] for r in rows], origin=["t"] * 64)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = ClassificationTask(max_length=32)
    task.fit_labels(data)
    enc = task.encode(tok, data)
    params = {}
    for chunk in (None, 40):
        torch.manual_seed(0)
        model = task.build_model(str(tiny_model), init="pretrained", size=None, dropout=0.0, tokenizer=tok)
        cfg = TrainConfig.model_validate({"max_steps": 3, "batch_size": 16, "optimizer": {"lr": 1e-2},
                                          "batching": {"chunk_tokens": chunk}, "eval_every": 100})
        fit(task, model, enc, enc, cfg, EarlyStoppingConfig(enabled=False), tmp_path / str(chunk), progress=False)
        params[chunk] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert min(enc.lengths) * 16 > 40  # the cap really splits every 16-example batch
    assert torch.allclose(params[None], params[40], atol=1e-5), (params[None] - params[40]).abs().max()
