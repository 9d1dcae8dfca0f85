"""AdaLoRA, IA3, prompt tuning (and prefix tuning's refusal) through peft: trainable-parameter counts by hand,
the head saved with the adapter and identical after reload, merged == adapter outputs where the update merges,
AdaLoRA's budget actually cut to target_r, predict loading a prompt-tuned run, config errors before the run
folder exists."""

import json

import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.errors import ConfigError
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_config, write_csv

TEXTS = [r["text"] for r in make_rows(12, seed=5)]
HEAD = 32 * 2 + 2  # classifier weight + bias on the tiny BERT (hidden 32, 2 labels)

# tiny BERT: hidden 32, intermediate 64, 2 layers
CASES = {
    # q and v: A (r x 32) + B (32 x r) + E (r) at the initial rank r = 4, per module, 2 modules x 2 layers
    "adalora": ({"init_r": 4, "target_r": 2, "dropout": 0.0}, 2 * 2 * (4 * 32 + 32 * 4 + 4) + HEAD),
    # key 32 + value 32 (outputs), attention.output.dense 32 + output.dense 64 (feed-forward: inputs), x 2 layers
    "ia3": ({}, 2 * (32 + 32 + 32 + 64) + HEAD),
    # 5 virtual tokens x hidden 32
    "prompt_tuning": ({"tokens": 5}, 5 * 32 + HEAD),
}


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    data = write_csv(root / "d.csv", make_rows(160, seed=1))
    out = {}
    for name, (settings, _) in CASES.items():
        # AdaLoRA: one validation at the end, so the model kept is the one whose budget was fixed (the budget
        # test below); with earlier validations the best may come from before (the saved pattern follows it)
        every = {"eval_every": 10_000} if name == "adalora" else {}
        cfg = load_config(raw=tiny_config(tiny_model, data, root, name=name, methods={name: settings},
                                          train={"epochs": 3, "optimizer": {"lr": 1e-2}, **every}))
        out[name] = (run(cfg, progress=False), root / name)
    return out, tiny_model


@pytest.mark.parametrize("name", list(CASES))
def test_trainable_parameters_match_a_hand_count(runs, name):
    summary, _ = runs[0][name]
    assert summary["train"]["trainable_params"] == CASES[name][1]
    assert summary["methods"][0]["method"] == name


@pytest.mark.parametrize("name", ["adalora", "ia3"])
def test_merged_model_agrees_with_the_adapter_and_keeps_the_trained_head(runs, name):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    _, run_dir = runs[0][name]
    assert json.loads((run_dir / "adapter/merge_check.json").read_text())["max_abs_difference"] <= 1e-5
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    assert not any(k for k in merged.state_dict() if "lora" in k or "ia3" in k)
    base = AutoModelForSequenceClassification.from_pretrained(runs[1], config=merged.config)
    fresh_head = base.classifier.weight.detach().clone()
    reloaded = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    head = reloaded.base_model.model.classifier.modules_to_save["default"].weight
    assert torch.equal(head, merged.classifier.weight) and not torch.equal(head, fresh_head)
    batch = {"input_ids": torch.randint(5, 150, (3, 10)), "attention_mask": torch.ones(3, 10, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, merged(**batch).logits, atol=1e-5, rtol=0)


def test_adalora_cut_the_rank_budget_to_its_target(runs):
    _, run_dir = runs[0]["adalora"]
    saved = json.loads((run_dir / "adapter/adapter_config.json").read_text())
    pattern = saved["rank_pattern"]  # which of the init_r ranks each module kept, fixed in the final phase
    assert pattern and len(pattern) == 4
    kept = sum(sum(bool(b) for b in mask) for mask in pattern.values())
    assert kept == 2 * 4  # target_r x modules: the budget went from 4 x 4 down to 2 x 4
    assert all(len(mask) == 4 for mask in pattern.values())


def test_prompt_tuning_ships_no_weights_and_predict_applies_the_prompt(runs):
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from transferkit.deploy.predictor import Predictor

    _, run_dir = runs[0]["prompt_tuning"]
    model_dir = run_dir / "model"
    assert not list(model_dir.glob("*.safetensors"))  # a plain pipeline cannot predict without the prompt
    assert json.loads((model_dir / "adapter.json").read_text())["adapter"] == "../adapter"
    with pytest.raises(OSError):
        AutoModelForSequenceClassification.from_pretrained(model_dir)
    preds = Predictor.load(run_dir).predict(TEXTS)
    base = AutoModelForSequenceClassification.from_pretrained(runs[1], config=AutoConfig.from_pretrained(model_dir))
    by_hand = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        probs = torch.softmax(by_hand(**tok(TEXTS, padding=True, return_tensors="pt")).logits, dim=-1)
    labels = json.loads((model_dir / "task.json").read_text())["labels"]
    assert [p["label"] for p in preds] == [labels[i] for i in probs.argmax(-1).tolist()]
    assert [p["score"] for p in preds] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)
    result = CliRunner().invoke(app, ["predict", str(run_dir)], input="a great film\n")
    assert result.exit_code == 0 and json.loads(result.stdout)["label"] in labels, result.stderr


def test_prefix_tuning_on_bert_is_a_config_error_before_the_run_folder(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs",
                                                          methods={"prefix_tuning": {}}))
    result = CliRunner().invoke(app, ["finetune", str(cfg)])
    assert result.exit_code == 2, result.stderr
    assert ("methods -> prefix_tuning: Model does not support past key values which are required for prefix "
            "tuning") in result.stderr
    assert "Use prompt_tuning, lora or ia3 instead" in result.stderr and not (tmp_path / "runs").exists()


def test_peft_method_config_errors():
    base = {"data": {"source": "x"}}
    with pytest.raises(ConfigError, match="methods: adalora and lora cannot be combined"):
        load_config(raw={**base, "methods": {"lora": {}, "adalora": {}}})
    with pytest.raises(ConfigError, match="methods: adalora and gradual_unfreezing cannot be combined"):
        load_config(raw={**base, "methods": {"gradual_unfreezing": {}, "adalora": {}}})
    with pytest.raises(ConfigError, match="methods -> adalora -> target_r: must not exceed init_r"):
        load_config(raw={**base, "methods": {"adalora": {"init_r": 4, "target_r": 8}}})
    with pytest.raises(ConfigError, match="methods -> adalora -> final_fraction: with warmup_fraction 0.6 it leaves no steps"):
        load_config(raw={**base, "methods": {"adalora": {"warmup_fraction": 0.6, "final_fraction": 0.5}}})
    with pytest.raises(ConfigError, match="methods -> prompt_tuning: works for text_classification, not for "
                                          "token_classification"):
        load_config(raw={**base, "task": {"type": "token_classification"}, "methods": {"prompt_tuning": {}}})
    with pytest.raises(ConfigError, match="methods -> prompt_tuning -> init_text: init: text needs init_text"):
        load_config(raw={**base, "methods": {"prompt_tuning": {"init": "text"}}})


def test_ia3_with_an_unknown_module_is_a_config_error(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs",
                                                          methods={"ia3": {"target_modules": ["k_proj"]}}))
    result = CliRunner().invoke(app, ["finetune", str(cfg)])
    assert result.exit_code == 2 and "methods -> ia3 -> target_modules: no Linear layer of the encoder is named " \
        "['k_proj']" in result.stderr, result.stderr


def test_adalora_adapter_reloads_exactly_when_the_best_model_predates_the_fixed_budget(tiny_model, tmp_path):
    """Validation every epoch: the best checkpoint can come from while the budget still shrank, using more ranks
    than peft's final pattern; the pattern saved is the one the restored weights use, so reload == merged."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    data = write_csv(tmp_path / "d.csv", make_rows(160, seed=1))
    cfg = load_config(raw=tiny_config(tiny_model, data, tmp_path, methods={"adalora": {"init_r": 4, "target_r": 1}},
                                      train={"epochs": 4, "optimizer": {"lr": 1e-2}}))
    summary = run(cfg, progress=False)
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "tiny/model").eval()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, config=merged.config)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "tiny/adapter").eval()
    batch = {"input_ids": torch.randint(5, 150, (8, 12), generator=torch.Generator().manual_seed(0)),
             "attention_mask": torch.ones(8, 12, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, merged(**batch).logits, atol=1e-6, rtol=0)
    assert summary["train"]["best_step"] is not None
