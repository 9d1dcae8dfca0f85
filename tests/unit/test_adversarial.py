"""Adversarial training: FGM and PGD on the embedding matrix restore it bit for bit and add the adversarial
gradients; on the embedding output (frozen embeddings, adapters) the gradients equal a hand computation;
FreeLB averages the gradients of its K passes; a perturbation that cannot work is a config error before the
run folder exists."""

import json

import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.methods.base import StepContext
from transferkit.methods.stack import MethodStack

from conftest import make_rows, tiny_config, write_config, write_csv

BASE = {"data": {"source": "rotten_tomatoes"}}


def _model(tiny_model, frozen_embeddings=False):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    if frozen_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model.train()


BATCH = {"input_ids": torch.randint(5, 150, (4, 12), generator=torch.Generator().manual_seed(1)),
         "attention_mask": torch.ones(4, 12, dtype=torch.long), "labels": torch.tensor([0, 1, 0, 1])}


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(model, methods):
    """One training step through the methods' chain; returns (logged loss, gradients)."""
    stack = MethodStack.from_config(load_config(raw={**BASE, "methods": methods}).methods)
    model = stack.prepare_model(model, task=None)
    model.zero_grad()

    def forward_loss():
        return model(**BATCH).loss

    def default():
        loss = forward_loss()
        loss.backward()
        return loss

    logged = stack.train_step(StepContext(model, BATCH, forward_loss, lambda loss: loss.backward(), 0), default)
    return float(logged.detach()), _grads(model), stack


def _clean(model):
    model.zero_grad()
    loss = model(**BATCH).loss
    loss.backward()
    return float(loss.detach()), _grads(model)


def _grads_at(model, delta):
    """Gradients of the loss with `delta` added to the word-embedding output (the hand computation)."""
    handle = model.get_input_embeddings().register_forward_hook(lambda m, i, out: out + delta)
    try:
        model.zero_grad()
        model(**BATCH).loss.backward()
        return _grads(model)
    finally:
        handle.remove()


def _output_grad(model, delta=None):
    """d loss / d (word-embedding output) at `delta`."""
    box = {}

    def hook(m, i, out):
        box["d"] = (torch.zeros_like(out) if delta is None else delta.clone()).requires_grad_(True)
        return out + box["d"]

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        model.zero_grad()
        model(**BATCH).loss.backward()
        return box["d"].grad.clone()
    finally:
        handle.remove()


def _unit(g):
    return g / torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1).view(-1, 1, 1)


@pytest.mark.parametrize("name,settings", [("fgm", {"epsilon": 1.0}), ("pgd", {"epsilon": 1.0, "alpha": 0.3, "steps": 3})])
def test_weight_attacks_restore_the_embeddings_and_add_adversarial_gradients(tiny_model, name, settings):
    model = _model(tiny_model)
    clean_loss, clean = _clean(model)
    emb_before = model.get_input_embeddings().weight.detach().clone()
    logged, grads, stack = _step(model, {name: {**settings, "target": "weights"}})
    assert torch.equal(model.get_input_embeddings().weight, emb_before)  # restored bit for bit
    assert logged == pytest.approx(clean_loss)  # the clean loss is what gets logged
    assert not torch.allclose(grads["classifier.weight"], clean["classifier.weight"], atol=1e-7)
    assert stack.describe()[0]["perturbs"] == "weights"


def test_fgm_on_the_output_equals_the_hand_computation(tiny_model):
    model = _model(tiny_model, frozen_embeddings=True)
    clean_loss, clean = _clean(model)
    r = 0.5 * _unit(_output_grad(model))  # epsilon * g / ||g||, per example
    adv = _grads_at(model, r)
    logged, grads, stack = _step(model, {"fgm": {"epsilon": 0.5}})  # auto: the embeddings are frozen
    assert stack.describe()[0]["perturbs"] == "output"
    assert logged == pytest.approx(clean_loss)
    for n in clean:
        torch.testing.assert_close(grads[n], clean[n] + adv[n], atol=1e-6, rtol=1e-5)
    assert not model.get_input_embeddings()._forward_hooks  # the hook is gone after the step


def test_pgd_on_the_output_equals_the_hand_computation(tiny_model):
    model = _model(tiny_model, frozen_embeddings=True)
    clean_loss, clean = _clean(model)
    eps, alpha = 0.4, 0.3
    delta = alpha * _unit(_output_grad(model))  # step 1, inside the ball (0.3 < 0.4)
    delta = delta + alpha * _unit(_output_grad(model, delta))  # step 2: 0.6 > 0.4, projected back
    delta = delta * (eps / torch.linalg.vector_norm(delta.reshape(4, -1), dim=1)).clamp(max=1).view(-1, 1, 1)
    adv = _grads_at(model, delta)
    logged, grads, _ = _step(model, {"pgd": {"epsilon": eps, "alpha": alpha, "steps": 2}})
    assert logged == pytest.approx(clean_loss)
    for n in clean:  # the clean gradients plus the last adversarial pass's only
        torch.testing.assert_close(grads[n], clean[n] + adv[n], atol=1e-6, rtol=1e-5)


def test_freelb_averages_the_gradients_of_its_passes(tiny_model):
    model = _model(tiny_model)
    clean_loss, clean = _clean(model)
    _, one, _ = _step(model, {"freelb": {"steps": 1, "init_mag": 0.0}})
    for n in clean:  # one pass from zero is plain training
        torch.testing.assert_close(one[n], clean[n])
    d1 = 0.2 * _unit(_output_grad(model))
    adv = _grads_at(model, d1)
    logged, two, _ = _step(model, {"freelb": {"steps": 2, "init_mag": 0.0, "adv_lr": 0.2}})
    for n in clean:
        torch.testing.assert_close(two[n], (clean[n] + adv[n]) / 2, atol=1e-6, rtol=1e-5)
    assert torch.equal(model.get_input_embeddings().weight, model.get_input_embeddings().weight.detach())
    assert logged != pytest.approx(clean_loss)  # the mean loss of the two passes


def test_freelb_random_start_stays_off_padding_and_is_seeded(tiny_model):
    from transferkit.methods.adversarial import random_start

    out = torch.zeros(2, 5, 8)
    batch = {"attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])}
    torch.manual_seed(3)
    a = random_start(out, batch, 0.6)
    torch.manual_seed(3)
    assert torch.equal(a, random_start(out, batch, 0.6))
    assert float(a[0, 3:].abs().sum()) == 0.0 and float(a[0, :3].abs().sum()) > 0
    assert float(a[0].abs().max()) <= 0.6 / (3 * 8) ** 0.5 + 1e-7


def test_weight_attack_on_frozen_embeddings_is_a_config_error_before_the_run_folder(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    for extra in ({"freeze": {"mode": "embeddings"}, "methods": {"fgm": {"target": "weights"}}},
                  {"methods": {"lora": {}, "pgd": {"target": "weights"}}}):
        cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs", **extra))
        result = CliRunner().invoke(app, ["finetune", str(cfg), "-q"])
        assert result.exit_code == 2, result.stderr
        assert "-> target: the word embeddings are frozen" in result.stderr and "use target: output" in result.stderr
        assert not (tmp_path / "runs/tiny").exists()


def test_lora_with_fgm_trains_on_the_output_and_says_so(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d.csv", make_rows(60))
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs",
                                                          methods={"lora": {"r": 2}, "fgm": {}},
                                                          train={"max_steps": 3}))
    result = CliRunner().invoke(app, ["finetune", str(cfg), "-q"])
    assert result.exit_code == 0, result.stderr
    described = json.loads((tmp_path / "runs/tiny/metrics.json").read_text())["methods"]
    assert [(m["method"], m.get("perturbs")) for m in described] == [("lora", None), ("fgm", "output")]
