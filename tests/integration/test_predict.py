"""The model folder: transformers.pipeline loads it and agrees with our predictions; `transferkit predict`
reads csv/jsonl/txt/stdin and writes JSONL."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.deploy.predictor import Predictor
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_csv, write_jsonl

runner = CliRunner()
TEXTS = [r["text"] for r in make_rows(30, seed=123)] + ["great", "a dull and tedious film with a weak plot"]


@pytest.fixture(scope="module", params=["cls", "mean"])
def trained(request, tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"run_{request.param}")
    data = write_csv(root / "reviews.csv", make_rows(240, seed=1))
    cfg = load_config(raw=tiny_config(tiny_model, data, root, name=request.param,
                                      task={"pooling": request.param}, train={"epochs": 4}))
    run(cfg, progress=False)
    return root / request.param, request.param


def test_pipeline_agrees_with_predictor(trained):
    from transformers import pipeline

    run_dir, pooling = trained
    ours = Predictor.load(run_dir).predict(TEXTS)
    # the mean-pooling head is not a transformers class: its code ships in the folder (heads.py)
    assert (run_dir / "model/heads.py").exists() == (pooling == "mean")
    pipe = pipeline("text-classification", model=str(run_dir / "model"), top_k=None,
                    trust_remote_code=pooling == "mean")
    theirs = pipe(TEXTS)
    for o, t in zip(ours, theirs):
        best = max(t, key=lambda d: d["score"])
        assert best["label"] == o["label"]
        for d in t:
            assert d["score"] == pytest.approx(o["probabilities"][d["label"]], abs=1e-5)
    labels = {o["label"] for o in ours}
    assert labels == {"negative", "positive"}, "the fixture model should have learned both classes"


def test_predict_cli_formats(trained, tmp_path):
    run_dir, _ = trained
    expected = Predictor.load(run_dir).predict(TEXTS)
    inputs = {
        "in.csv": lambda p: write_csv(p, [{"review": t} for t in TEXTS]),
        "in.jsonl": lambda p: write_jsonl(p, [{"review": t} for t in TEXTS]),
        "in.txt": lambda p: p.write_text("\n".join(TEXTS) + "\n", encoding="utf-8"),
    }
    for name, make in inputs.items():
        path = tmp_path / name
        make(path)
        out = tmp_path / f"{name}.out.jsonl"
        res = runner.invoke(app, ["predict", str(run_dir), "--input", str(path), "--text-column", "review",
                                  "--output", str(out)])
        assert res.exit_code == 0, res.stderr
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert [r["text"] for r in rows] == TEXTS
        assert [r["label"] for r in rows] == [e["label"] for e in expected], name
        assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    res = runner.invoke(app, ["predict", str(run_dir)], input="\n".join(TEXTS[:3]) + "\n")
    assert res.exit_code == 0
    assert [json.loads(x)["label"] for x in res.stdout.splitlines()] == [e["label"] for e in expected[:3]]


def test_predict_cli_errors(trained, tmp_path):
    run_dir, _ = trained
    res = runner.invoke(app, ["predict", str(tmp_path)])
    assert res.exit_code == 2 and "neither a run folder" in res.stderr
    path = write_csv(tmp_path / "x.csv", [{"body": "x"}])
    res = runner.invoke(app, ["predict", str(run_dir), "--input", str(path)])
    assert res.exit_code == 2 and "no column 'text'" in res.stderr and "Columns found: body" in res.stderr


def test_predictions_do_not_depend_on_batching(trained):
    run_dir, _ = trained
    pred = Predictor.load(run_dir)
    a = pred.predict_scores(TEXTS, batch_size=1)
    b = pred.predict_scores(TEXTS, batch_size=64)
    assert np.allclose(a, b, atol=1e-5)


def test_int8_quantizes_encoder_linears_and_keeps_predictions(trained):
    from transferkit.deploy.quantize import count_quantized

    run_dir, _ = trained
    fp32 = Predictor.load(run_dir, device="cpu")
    q = Predictor.load(run_dir, int8=True)
    # 2 layers x (q, k, v, attention output, intermediate, output) [+ the pooler of the cls head]; the head stays fp32
    assert count_quantized(q.model) in (12, 13)
    assert isinstance(q.model.classifier, torch.nn.Linear)
    texts = TEXTS * 4
    a, b = fp32.predict_scores(texts), q.predict_scores(texts)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() < 0.1
    agree = np.mean([p["label"] == o["label"] for p, o in zip(fp32.predict(texts), q.predict(texts))])
    assert agree >= 0.95  # a text scored near 0.5 may flip
    res = runner.invoke(app, ["predict", str(run_dir), "--int8"], input="a great film\n")
    assert res.exit_code == 0 and json.loads(res.stdout)["label"] in {"negative", "positive"}
