"""The peft methods on every task: NER, relations and QA fine-tuning and MLM pretraining train adapters plus
the task head, save `adapter/` and a merged `model/` that agree within 1e-5, and predict loads the result."""

import json
import random

import pytest
import torch

from transferkit.config import load_config, load_pretrain_config
from transferkit.recipes import finetune, pretrain

from conftest import ner_rows, qa_rows, re_rows, sentence, tiny_config, write_jsonl


TASKS = {"token_classification": ner_rows, "relation_extraction": lambda n: re_rows(n, seed=2),
         "question_answering": qa_rows}


@pytest.mark.parametrize("method,settings", [("lora", {"r": 2}), ("ia3", {}), ("adalora", {"init_r": 4, "target_r": 2})])
@pytest.mark.parametrize("task", list(TASKS))
def test_peft_methods_on_every_finetuning_task(tiny_model, tmp_path, task, method, settings):
    from transferkit.deploy.predictor import Predictor
    from transferkit.errors import ConfigError

    data = write_jsonl(tmp_path / "d.jsonl", TASKS[task](80))
    raw = tiny_config(tiny_model, data, tmp_path, name="run", task={"type": task}, methods={method: settings},
                      train={"max_steps": 6, "eval_every": 3, "optimizer": {"lr": 1e-2}})
    if task == "relation_extraction" and method == "ia3":  # the marker embeddings must train; IA3 cannot
        with pytest.raises(ConfigError, match="methods -> ia3: the task added .* tokens"):
            finetune.run(load_config(raw=raw), progress=False)
        assert not (tmp_path / "run").exists()
        return
    summary = finetune.run(load_config(raw=raw), progress=False)
    assert 0 < summary["train"]["trainable_fraction"] < 0.5
    assert (tmp_path / "run/adapter/adapter_config.json").is_file()
    assert json.loads((tmp_path / "run/adapter/merge_check.json").read_text())["max_abs_difference"] <= 1e-5
    assert (tmp_path / "run/model/model.safetensors").is_file()
    pred = Predictor.load(tmp_path / "run")
    assert not hasattr(pred.model, "peft_config")  # the merged model, plain transformers
    example = {"token_classification": "Carla joined Acme today",
               "relation_extraction": {"text": "the movie says <e1>Carla</e1> works for <e2>Acme</e2> today"},
               "question_answering": {"question": "Who founded Acme?", "context": "Carla founded Acme in the spring."}}[task]
    merged = pred.predict([example])
    adapted = Predictor.load(tmp_path / "run/adapter").predict([example])  # base + adapter: the same prediction
    assert _rounded(adapted) == _rounded(merged) and merged[0]


def _rounded(x):
    """Predictions with scores to 4 decimals (merged and adapter outputs agree within 1e-5)."""
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def test_lora_in_mlm_pretraining(tiny_model, tmp_path):
    from transformers import AutoModelForMaskedLM

    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(sentence(rng, "positive") for _ in range(3)) for _ in range(120)))
    cfg = load_pretrain_config(raw={
        "name": "pt", "model": {"init": "pretrained", "path": str(tiny_model), "max_length": 32},
        "corpus": {"sources": [str(corpus)], "heldout": 0.1},
        "methods": {"lora": {"r": 2, "dropout": 0.0}, "layerwise_lr": {"decay": 0.8}},
        "train": {"max_steps": 8, "batch_size": 8, "optimizer": {"lr": 1e-2}, "eval_every": 4, "log_every": 4},
        "output": {"dir": str(tmp_path / "{name}")}})
    s = pretrain.run(cfg, progress=False)
    # adapters on q and v (2 layers x 2 x (2 x 32 + 32 x 2)) + the MLM head's transform (32 x 32 + 32, LayerNorm 64)
    assert s["model"]["trainable"] == 2 * 2 * 128 + 32 * 32 + 32 + 64
    assert (tmp_path / "pt/adapter/adapter_config.json").is_file()
    assert json.loads((tmp_path / "pt/adapter/merge_check.json").read_text())["max_abs_difference"] <= 1e-5
    merged = AutoModelForMaskedLM.from_pretrained(tmp_path / "pt/model").eval()
    assert not any("lora" in k for k in merged.state_dict())
    assert s["heldout_after"]["mlm_loss"] < s["heldout_before"]["mlm_loss"]
    with torch.no_grad():
        assert merged(input_ids=torch.tensor([[2, 10, 11, 3]])).logits.shape[-1] == s["model"]["vocab_size"]


@pytest.mark.parametrize("max_steps", [4, 6])
def test_mlm_head_warmup_leaves_the_encoder_unchanged(tiny_model, tmp_path, max_steps):
    """head_warmup in continued pretraining of a checkpoint without an MLM head: for its 4 steps only the new head
    (transform + decoder bias; the decoder weight is tied to the frozen embeddings) trains; then everything."""
    from safetensors.torch import load_file

    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(sentence(rng, "positive") for _ in range(3)) for _ in range(120)))
    cfg = load_pretrain_config(raw={
        "name": "pt", "model": {"init": "pretrained", "path": str(tiny_model), "max_length": 32},
        "corpus": {"sources": [str(corpus)], "heldout": 0.1}, "methods": {"head_warmup": {"steps": 4}},
        "train": {"max_steps": max_steps, "batch_size": 8, "optimizer": {"lr": 1e-2}, "eval_every": 100,
                  "log_every": 2},
        "output": {"dir": str(tmp_path / "{name}")}})
    summary = pretrain.run(cfg, progress=False)
    before = load_file(tiny_model / "model.safetensors")
    after = load_file(tmp_path / "pt/model/model.safetensors")
    encoder = [k for k in before if "encoder" in k or "embeddings" in k]
    assert len(encoder) > 10
    changed = [k for k in encoder if not torch.equal(before[k], after["bert." + k.removeprefix("bert.")])]
    if max_steps == 4:
        assert changed == []  # the encoder and embeddings are exactly the checkpoint's
        assert summary["heldout_after"]["mlm_loss"] < summary["heldout_before"]["mlm_loss"]  # the head learned
    else:
        assert len(changed) == len(encoder)  # after the warm-up every weight trains

