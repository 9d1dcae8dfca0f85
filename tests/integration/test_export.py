"""`transferkit export`: ONNX equals PyTorch on every task, the export folder predicts like the run, the int8
gate refuses a model that lost accuracy (and --force overrides it), and a bad export leaves nothing behind."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.deploy.onnx import INT8_FILE, ONNX_FILE
from transferkit.deploy.predictor import Predictor
from transferkit.errors import ModelError
from transferkit.recipes import finetune
from transferkit.recipes.export import GateError, export

from conftest import make_rows, ner_rows, qa_rows, re_rows, tiny_config, write_csv, write_jsonl

runner = CliRunner()

TASKS = {
    "text_classification": (lambda root: write_csv(root / "d.csv", make_rows(240, seed=1)),
                            ["a dull and tedious film", "great", "the acting was superb and the plot moving"]),
    "token_classification": (lambda root: write_jsonl(root / "d.jsonl", ner_rows(120)),
                             ["Carla joined Acme today", "Ivan joined Hooli"]),
    "relation_extraction": (lambda root: write_jsonl(root / "d.jsonl", re_rows(120, seed=2)),
                            [{"text": "the movie says <e1>Carla</e1> works for <e2>Acme</e2> today"},
                             {"text": "the movie says <e2>Carla</e2> met <e1>Acme</e1> today"}]),
    "question_answering": (lambda root: write_jsonl(root / "d.jsonl", qa_rows(120)),
                           [{"question": "Who founded Acme?", "context": "Carla founded Acme in the spring."}]),
}


def _train(tiny_model, root, task):
    data = TASKS[task][0](root)
    raw = tiny_config(tiny_model, data, root, name="run", task={"type": task}, train={"epochs": 4})
    finetune.run(load_config(raw=raw), progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def classifier(tiny_model, tmp_path_factory):
    return _train(tiny_model, tmp_path_factory.mktemp("export_cls"), "text_classification")


def _close(a, b, tol=1e-4):
    """Two predictions equal: the same labels and spans, scores within tol."""
    if isinstance(a, float):
        return abs(a - b) <= tol
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("task", [t for t in TASKS if t != "text_classification"])
def test_onnx_equals_pytorch_on_every_task(tiny_model, tmp_path, task):
    run_dir = _train(tiny_model, tmp_path, task)
    m = export(run_dir, int8=True, force=True)
    dest = run_dir / "export"
    assert m["dir"] == str(dest) and (dest / ONNX_FILE).is_file() and (dest / INT8_FILE).is_file()
    assert m["variants"]["onnx"]["max_abs_diff"] <= 1e-4
    assert m["variants"]["onnx"][m["metric"]] == pytest.approx(m["variants"]["pytorch"][m["metric"]], abs=1e-9)
    inputs = TASKS[task][1]
    ours, theirs = Predictor.load(run_dir).predict(inputs), Predictor.load(dest).predict(inputs)
    assert Predictor.load(dest).backend == "onnx"
    assert ours and _close(ours, theirs), (ours, theirs)


def test_classification_export_folder_is_self_contained(classifier, tmp_path):
    dest = tmp_path / "exported"
    m = export(classifier, dest, int8=True, max_drop=100.0)
    files = {p.name for p in dest.iterdir()}
    assert {ONNX_FILE, INT8_FILE, "task.json", "config.json", "export.json", "README.md", "tokenizer.json"} <= files
    assert not any(f.endswith(".safetensors") for f in files)  # ONNX only: the torch weights stay in the run
    assert json.loads((dest / "export.json").read_text())["variants"].keys() == {"pytorch", "onnx", "onnx_int8"}
    assert m["validation_examples"] == 24  # 10% of 240 rows
    assert m["variants"]["onnx_int8"]["size_mb"] < m["variants"]["onnx"]["size_mb"]
    card = (dest / "README.md").read_text()
    assert "| onnx_int8 | model.int8.onnx |" in card and "int8 gate:" in card
    texts = TASKS["text_classification"][1]
    torch_pred, onnx_pred = Predictor.load(classifier).predict(texts), Predictor.load(dest).predict(texts)
    assert _close(torch_pred, onnx_pred)
    q = Predictor.load(dest, int8=True)
    assert q.backend == "onnx-int8"
    probs = [p["probabilities"] for p in q.predict(texts)]
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probs)
    # the moved folder still works: nothing in it points back to the run
    moved = tmp_path / "moved"
    dest.rename(moved)
    assert _close(Predictor.load(moved).predict(texts), onnx_pred)


def _worse_int8(monkeypatch):
    """int8 quantization that ruins the model (its int8 weights reversed), to prove the gate looks."""
    import onnx
    from onnx import numpy_helper

    from transferkit.deploy import quantize

    real = quantize.quantize_onnx_int8

    def broken(src, dst):
        real(src, dst)
        model = onnx.load(str(dst))
        for init in model.graph.initializer:
            w = numpy_helper.to_array(init)
            if w.dtype == np.int8 and w.ndim == 2:
                init.CopyFrom(numpy_helper.from_array(-w[::-1].copy(), init.name))
        onnx.save(model, str(dst))
        return dst

    monkeypatch.setattr(quantize, "quantize_onnx_int8", broken)


def test_int8_gate_refuses_a_worse_model_and_force_overrides(classifier, tmp_path, monkeypatch):
    _worse_int8(monkeypatch)
    dest = tmp_path / "gated"
    with pytest.raises(GateError, match=r"int8 lost .* points of validation accuracy .* more than --max-drop 0.5: "
                                        r"model.int8.onnx was not written"):
        export(classifier, dest, int8=True)
    assert (dest / ONNX_FILE).is_file() and not (dest / INT8_FILE).exists()  # the fp32 export is kept
    gate = json.loads((dest / "export.json").read_text())["int8_gate"]
    assert gate["written"] is False and gate["drop_points"] > 0.5
    with pytest.raises(ModelError, match="has no int8 model"):
        Predictor.load(dest, int8=True)
    forced = export(classifier, dest, int8=True, force=True)
    assert (dest / INT8_FILE).is_file() and forced["int8_gate"]["forced"] is True
    assert "written with --force" in (dest / "README.md").read_text()


def test_export_that_differs_from_pytorch_is_not_written(classifier, tmp_path):
    with pytest.raises(ModelError, match=r"differ from PyTorch's by up to .* more than the tolerance"):
        export(classifier, tmp_path / "strict", tolerance=-1.0)  # any difference, even 0, is too much
    assert not (tmp_path / "strict").exists() and not (tmp_path / "strict.tmp").exists()


def test_export_and_predict_cli(classifier, tmp_path, monkeypatch):
    dest = tmp_path / "cli_export"
    r = runner.invoke(app, ["export", str(classifier), "--output", str(dest), "--int8", "--max-drop", "100"])
    assert r.exit_code == 0, r.output
    assert "| onnx |" in r.output and f"exported to {dest}" in r.output
    inp = tmp_path / "in.txt"
    inp.write_text("great\na dull and tedious film\n")
    a = runner.invoke(app, ["predict", str(classifier), "-i", str(inp)])
    b = runner.invoke(app, ["predict", str(dest), "-i", str(inp)])
    assert a.exit_code == b.exit_code == 0
    la = [json.loads(x) for x in a.output.splitlines()]
    lb = [json.loads(x) for x in b.output.splitlines()]
    assert [x["label"] for x in la] == [x["label"] for x in lb] and _close(la, lb)
    # not a run folder: the user is told what to give
    bad = runner.invoke(app, ["export", str(tmp_path)])
    assert bad.exit_code == 2 and "is not a run folder" in bad.output
    # a refused int8 model exits 1 with the reason; the fp32 export is there
    _worse_int8(monkeypatch)
    gated = runner.invoke(app, ["export", str(classifier), "-o", str(tmp_path / "g"), "--int8"])
    assert gated.exit_code == 1 and "model.int8.onnx was not written" in gated.output, gated.output
    assert (tmp_path / "g" / ONNX_FILE).is_file()


def test_model_card_metrics_equal_metrics_json(classifier):
    """Every finetune writes model/README.md in Hugging Face's card format; its numbers are the run's."""
    import yaml

    from transferkit.deploy.card import read_card_metrics

    summary = json.loads((classifier / "metrics.json").read_text())
    card = (classifier / "model" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---", 2)[1])
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "transformers"
    assert "transferkit" in meta["tags"] and meta["datasets"] == ["d.csv"]
    metrics = read_card_metrics(classifier / "model" / "README.md")
    assert metrics == {k: summary["test"][k] for k in ("accuracy", "macro_f1", "ece", "nll")}
    assert f"| accuracy | {summary['test']['accuracy']:.4f} |" in card
    assert f"{summary['train']['trainable_params']:,} of {summary['train']['total_params']:,}" in card


def test_pruned_model_has_fewer_heads_loads_in_transformers_and_exports(classifier, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from transferkit.deploy.prune import choose_heads

    dest = tmp_path / "pruned"
    m = export(classifier, dest, prune_heads=0.5, prune_ffn=0.25, recover_epochs=1)
    p = m["pruning"]
    assert p["heads_before"] == 4 and p["heads_after"] == 2 and p["heads"] == [1, 1]  # 2 layers x 2 heads
    assert p["ffn"] == [48, 48] and p["params_after"] < p["params_before"]
    assert m["variants"]["onnx"]["max_abs_diff"] <= 1e-4  # the pruned model exports faithfully
    # plain transformers loads the pruned folder (its class comes with it) with the pruned shapes
    hf = AutoModelForSequenceClassification.from_pretrained(dest / "model", trust_remote_code=True).eval()
    layer = hf.bert.encoder.layer[0]
    assert layer.attention.self.query.out_features == 16 and layer.intermediate.dense.out_features == 48
    assert sum(x.numel() for x in hf.parameters()) == p["params_after"]
    ours = Predictor.load(dest / "model")
    texts = TASKS["text_classification"][1]
    enc = ours.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hf_probs = torch.softmax(hf(**enc).logits, -1)
    for row, pred in zip(hf_probs, ours.predict(texts)):
        assert [float(x) for x in row] == pytest.approx([pred["probabilities"][k] for k in ("negative", "positive")],
                                                        abs=1e-5)
    assert _close(Predictor.load(dest).predict(texts), ours.predict(texts))
    # the least important heads go first, never a layer's last one
    from transferkit.deploy.prune import Importance

    imp = Importance(torch.tensor([[0.9, 0.1], [0.2, 0.3]]), [])
    assert choose_heads(imp, 0.5) == {0: [1], 1: [0]}
    assert choose_heads(Importance(torch.tensor([[0.1, 0.2], [0.9, 0.8]]), []), 0.5) == {0: [0], 1: [1]}

