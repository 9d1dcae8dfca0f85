"""End to end on the packaged pretrained MiniLM and a few hundred real Rotten Tomatoes snippets."""

import json

import pytest
from typer.testing import CliRunner

from transferkit.cli import app

runner = CliRunner()
pytestmark = pytest.mark.integration


def test_minilm_finetune_beats_baselines(tmp_path):
    res = runner.invoke(app, [
        "finetune", "configs/sentiment.yaml", "name=it", f"output.dir={tmp_path}/{{name}}", "data.limit=600", "methods={}",
        "train.optimizer.lr=1e-4", "train.batch_size=16", "train.epochs=3", "-q"])
    assert res.exit_code == 0, res.stderr
    m = json.loads((tmp_path / "it/metrics.json").read_text())
    t = m["transfer"]
    assert m["data"]["sizes"] == {"train": 479, "validation": 61, "test": 60}
    assert t["majority"]["accuracy"] == pytest.approx(0.583, abs=0.01)
    # measured: majority 0.583, linear probe 0.683, fine-tuned 0.750 (test n=60, so SE ~ 0.05)
    assert t["fine_tuned"]["accuracy"] >= t["majority"]["accuracy"] + 0.10
    assert t["linear_probe"]["accuracy"] >= t["majority"]["accuracy"] + 0.03
    # MiniLM-L6 encoder with its pooler ([CLS] pooling, the shipped config) + a 384x2 linear head
    assert m["train"]["total_params"] == m["train"]["trainable_params"] == 22_713_986
    report = (tmp_path / "it/report.md").read_text()
    assert "## Transfer: what the pretrained weights bought" in report
    assert "| Linear probe (frozen pretrained features) |" in report
    assert "test accuracy" in res.stdout


def test_minilm_lora_learns_with_few_parameters(tmp_path):
    """LoRA (peft) on the pretrained MiniLM: under 2% of the parameters train and it learns (measured: 0.667 test
    accuracy vs 0.583 for the majority class, n=60; full fine-tuning above: 0.750; the settings are not tuned
    here, docs/methods.md will compare them). The merged model/ and the adapter/ are both written."""
    res = runner.invoke(app, [
        "finetune", "configs/sentiment.yaml", "name=lora", f"output.dir={tmp_path}/{{name}}", "data.limit=600", "methods={}",
        "train.optimizer.lr=1e-3", "train.batch_size=16", "train.epochs=3", "compare.linear_probe=false",
        "methods.lora.r=8", "methods.lora.target_modules=all-linear", "-q"])
    assert res.exit_code == 0, res.stderr
    m = json.loads((tmp_path / "lora/metrics.json").read_text())
    assert m["train"]["trainable_params"] / m["train"]["total_params"] < 0.02
    assert m["transfer"]["fine_tuned"]["accuracy"] >= m["transfer"]["majority"]["accuracy"] + 0.05, m["transfer"]
    assert (tmp_path / "lora/adapter/adapter_config.json").is_file()
    assert (tmp_path / "lora/model/model.safetensors").is_file()
