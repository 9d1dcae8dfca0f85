"""LoRA through peft: the trainable parameters are the adapters and the head; the run folder holds the adapter
(with the head) and a merged model that plain transformers loads; merged and adapter outputs agree; predict
loads either; a wrong target module is a config error before the run folder exists."""

import json

import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_config, write_csv

TEXTS = [r["text"] for r in make_rows(20, seed=5)]


@pytest.fixture(scope="module")
def lora_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    data = write_csv(root / "d.csv", make_rows(240, seed=1))
    cfg = load_config(raw=tiny_config(tiny_model, data, root, train={"epochs": 4, "optimizer": {"lr": 1e-2}},
                                      methods={"lora": {"r": 4, "alpha": 8, "dropout": 0.0}}))
    return run(cfg, progress=False), root / "tiny", tiny_model


def test_trainable_parameters_are_adapters_and_head(lora_run):
    summary, _, _ = lora_run
    # tiny BERT: hidden 32, 2 layers; r=4 on query and value: 2 x 2 x (4 x 32 + 32 x 4) = 1,024, classifier 66
    assert summary["train"]["trainable_params"] == 1024 + 66
    # the adapters trained (lora_B starts at zero). Whether LoRA *learns* is measured on the pretrained MiniLM
    # (tests/integration/test_minilm.py): on the random tiny model frozen features carry no signal.
    from safetensors.torch import load_file

    weights = load_file(lora_run[1] / "adapter/adapter_model.safetensors")
    assert all(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k)
    assert summary["methods"][0]["method"] == "lora"


def test_adapter_and_merged_model_are_saved_and_agree(lora_run):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    _, run_dir, tiny_model = lora_run
    adapter = run_dir / "adapter"
    weights = load_file(adapter / "adapter_model.safetensors")
    assert any("lora_A" in k for k in weights) and any("classifier" in k for k in weights)  # the head is in it
    assert json.loads((adapter / "merge_check.json").read_text())["max_abs_difference"] <= 1e-5
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    assert not any("lora" in k for k in merged.state_dict())  # a plain transformers model, no peft needed
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, config=merged.config)
    reloaded = PeftModel.from_pretrained(base, adapter).eval()
    # the head after reload is the trained head, not a fresh one
    assert torch.equal(reloaded.get_base_model().classifier.weight, merged.classifier.weight) or torch.equal(
        reloaded.base_model.model.classifier.modules_to_save["default"].weight, merged.classifier.weight)
    batch = {"input_ids": torch.randint(5, 150, (3, 10)), "attention_mask": torch.ones(3, 10, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, merged(**batch).logits, atol=1e-5)


def test_predict_loads_the_adapter_or_the_merged_model(lora_run):
    from transferkit.deploy.predictor import Predictor

    _, run_dir, _ = lora_run
    a = Predictor.load(run_dir / "adapter").predict(TEXTS)
    b = Predictor.load(run_dir).predict(TEXTS)
    assert [x["label"] for x in a] == [x["label"] for x in b]
    assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b))
    result = CliRunner().invoke(app, ["predict", str(run_dir / "adapter")], input="a great film\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["label"] in ("positive", "negative"), result.stderr


def test_unknown_target_module_is_a_config_error_before_the_run_folder(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs",
                                                          methods={"lora": {"target_modules": ["q_proj"]}}))
    result = CliRunner().invoke(app, ["finetune", str(cfg)])
    assert result.exit_code == 2, result.stderr
    assert "methods -> lora -> target_modules: no Linear layer of the encoder is named ['q_proj']" in result.stderr
    assert "query" in result.stderr and not (tmp_path / "runs").exists()


def test_all_linear_targets_every_encoder_linear_but_not_the_head(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from transferkit.methods.stack import MethodStack

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    methods = load_config(raw={"data": {"source": "x"}, "methods": {"lora": {"target_modules": "all-linear"}}}).methods
    wrapped = MethodStack.from_config(methods).prepare_model(model, task=None)
    adapted = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if ".lora_A." in n}
    assert len(adapted) == 2 * 6 + 1  # q, k, v, attention out, intermediate, output per layer; the pooler
    assert not any("classifier" in n for n in adapted)
