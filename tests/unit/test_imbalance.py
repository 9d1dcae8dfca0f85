"""Class imbalance and the loss methods: the shared loss equals a hand computation (and torch's cross-entropy
where they coincide), inverse-frequency weights, the balanced sampler's class counts (a pure function of seed
and epoch), threshold tuning on validation, and that a run really trains with what was configured."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.errors import ConfigError
from transferkit.methods.balanced_sampler import balanced_epoch
from transferkit.methods.losses import LossSpec, class_counts, inverse_frequency, spec_loss
from transferkit.methods.threshold import best_threshold
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_config, write_csv

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, -1.0]])
LABELS = torch.tensor([0, 1, 1, -100])  # the last one is ignored


def _hand(weight=None, gamma=0.0, s=0.0):
    total = wsum = 0.0
    for row, y in zip(LOGITS.tolist(), LABELS.tolist()):
        if y == -100:
            continue
        z = sum(math.exp(v) for v in row)
        logp = [v - math.log(z) for v in row]
        ce = -(1 - s) * logp[y] - s / len(row) * sum(logp)
        ce *= (1 - math.exp(logp[y])) ** gamma
        w = 1.0 if weight is None else weight[y]
        total, wsum = total + w * ce, wsum + w
    return total / wsum


@pytest.mark.parametrize("spec", [LossSpec(), LossSpec(weight=[1.0, 3.0]), LossSpec(gamma=2.0),
                                  LossSpec(weight=[0.25, 1.5], gamma=1.0), LossSpec(smoothing=0.2),
                                  LossSpec(weight=[1.0, 3.0], gamma=2.0, smoothing=0.1)],
                         ids=["ce", "weights", "focal", "focal+alpha", "smoothing", "all"])
def test_loss_equals_a_hand_computation(spec):
    got = float(spec_loss(LOGITS, LABELS, spec))
    assert got == pytest.approx(_hand(spec.weight, spec.gamma, spec.smoothing), rel=1e-6)


def test_loss_is_torch_cross_entropy_where_they_coincide():
    w = torch.tensor([1.0, 3.0])
    assert float(spec_loss(LOGITS, LABELS, LossSpec(weight=w.tolist()))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(LOGITS, LABELS, weight=w)), rel=1e-6)
    assert float(spec_loss(LOGITS, LABELS, LossSpec(smoothing=0.2))) == pytest.approx(
        float(torch.nn.functional.cross_entropy(LOGITS, LABELS, label_smoothing=0.2)), rel=1e-6)
    # token classification: (batch, tokens, classes) logits, -100 on padding and sub-words
    tok = LOGITS.view(2, 2, 2)
    assert float(spec_loss(tok, LABELS.view(2, 2), LossSpec(gamma=2.0))) == pytest.approx(_hand(gamma=2.0), rel=1e-6)


def test_focal_loss_gradients_stay_finite_for_confident_examples():
    logits = torch.tensor([[40.0, 0.0], [0.0, 1.0]], requires_grad=True)
    spec_loss(logits, torch.tensor([0, 1]), LossSpec(gamma=0.5)).backward()
    assert torch.isfinite(logits.grad).all()


def test_class_counts_and_inverse_frequency():
    assert class_counts([{"labels": 0}] * 90 + [{"labels": 1}] * 10, 2) == [90, 10]
    assert class_counts([{"labels": [0, -100, 2, 2]}, {"labels": [1]}], 4) == [1, 1, 2, 0]
    assert inverse_frequency([90, 10]) == pytest.approx([100 / 180, 100 / 20])
    assert inverse_frequency([5, 0, 5]) == pytest.approx([10 / 15, 0.0, 10 / 15])


def test_balanced_sampler_counts_and_determinism():
    labels = [0] * 90 + [1] * 10
    a = balanced_epoch(labels, 10, seed=1, epoch=0)
    assert a == balanced_epoch(labels, 10, seed=1, epoch=0)  # a pure function of (seed, epoch)
    assert a != balanced_epoch(labels, 10, seed=1, epoch=1) and a != balanced_epoch(labels, 10, seed=2, epoch=0)
    assert len(a) == 10 and all(len(b) == 10 for b in a)  # as many draws as examples, in batches of 10
    minority = [sum(labels[i] for i in b) for b in a]
    assert 40 <= sum(minority) <= 60  # about half of 100 draws, against 10 in the natural order
    counts = [sum(labels[i] for e in range(20) for b in balanced_epoch(labels, 10, seed=1, epoch=e) for i in b)]
    assert counts[0] / 2000 == pytest.approx(0.5, abs=0.03)
    natural = sum(labels[i] for b in balanced_epoch(labels, 10, seed=1, epoch=0, power=0.0) for i in b)
    assert natural < 25


def test_best_threshold_on_validation_scores():
    p = [0.1, 0.2, 0.3, 0.35, 0.4, 0.6]
    gold = [0, 0, 1, 1, 1, 1]
    t, score = best_threshold(p, gold, "macro_f1")
    assert (t, score) == (pytest.approx(0.3), 1.0)  # of all perfect cuts in (0.2, 0.3], the one nearest 0.5
    t, score = best_threshold([0.4, 0.6, 0.7], [0, 1, 1], "accuracy")
    assert score == 1.0 and 0.4 < t <= 0.6 and t == pytest.approx(0.5)  # 0.5 itself is a candidate


def _imbalanced(path, n_pos=12, n_neg=108, seed=3):
    rows = [r for r in make_rows(2 * n_neg, seed=seed) if r["label"] == "negative"][:n_neg]
    rows += [r for r in make_rows(2 * n_pos, seed=seed + 1) if r["label"] == "positive"][:n_pos]
    return write_csv(path, rows)


def test_a_zero_class_weight_really_silences_that_class(tiny_model, tmp_path):
    """positive: 0 in the loss: the model never learns to say positive (recall 0), which it does without."""
    data = _imbalanced(tmp_path / "d.csv", n_pos=60, n_neg=60)
    cfg = tiny_config(tiny_model, data, tmp_path, train={"epochs": 6, "optimizer": {"lr": 1e-2}},
                      methods={"class_weights": {"weights": {"positive": 0.0}}})
    m = run(load_config(raw=cfg), progress=False)
    assert m["test"]["per_class"]["positive"]["recall"] == 0.0
    plain = run(load_config(raw={**cfg, "name": "plain", "methods": {}}), progress=False)
    assert plain["test"]["per_class"]["positive"]["recall"] > 0.5, plain["test"]


def test_threshold_tuning_is_saved_and_applied_by_predict(tiny_model, tmp_path):
    from transferkit.deploy.predictor import Predictor

    data = _imbalanced(tmp_path / "d.csv")
    # with the from-scratch comparison, which tunes its own threshold: the shipped model keeps the fine-tuned one's
    cfg = tiny_config(tiny_model, data, tmp_path, train={"epochs": 2}, methods={"threshold_tuning": {}},
                      compare={"linear_probe": False, "scratch": True})
    m = run(load_config(raw=cfg), progress=False)
    chosen = m["methods"][0]
    assert chosen["method"] == "threshold_tuning" and 0.0 <= chosen["threshold"] <= 1.0
    assert chosen["validation_macro_f1"] >= chosen["validation_macro_f1_at_0.5"]
    saved = json.loads((tmp_path / "tiny/model/task.json").read_text())
    assert saved["threshold"] == chosen["threshold"]
    pred = Predictor.load(tmp_path / "tiny")
    second = pred.task.labels[1]
    texts = [r["text"] for r in make_rows(30, seed=9)]
    exact = pred.predict_scores(texts)  # unrounded (the output rounds probabilities to 6 decimals)
    for out, p in zip(pred.predict(texts), exact):  # the rule is P(labels[1]) >= threshold, not argmax
        assert (out["label"] == second) == (float(p[1]) >= saved["threshold"])


def test_imbalance_config_errors(tiny_model, tmp_path):
    base = {"data": {"source": "x"}}
    with pytest.raises(ConfigError, match="methods: class_weights and focal_loss cannot be combined"):
        load_config(raw={**base, "methods": {"focal_loss": {}, "class_weights": {}}})
    with pytest.raises(ConfigError, match="methods -> focal_loss: works for single-label classification"):
        load_config(raw={**base, "task": {"multilabel": True}, "methods": {"focal_loss": {}}})
    with pytest.raises(ConfigError, match="methods -> threshold_tuning: needs exactly 2 labels, task.labels has 3"):
        load_config(raw={**base, "task": {"labels": ["a", "b", "c"]}, "methods": {"threshold_tuning": {}}})
    with pytest.raises(ConfigError, match=r"methods -> class_weights -> weights: \['pos'\] are not among task.labels"):
        load_config(raw={**base, "task": {"labels": ["neg", "posi"]}, "methods": {"class_weights": {"weights": {"pos": 2}}}})
    with pytest.raises(ConfigError, match="methods: balanced_sampler and class_weights cannot be combined"):
        load_config(raw={**base, "methods": {"balanced_sampler": {}, "class_weights": {}}})
    with pytest.raises(ConfigError, match="balanced_sampler and focal_loss with alpha: inverse_frequency"):
        load_config(raw={**base, "methods": {"balanced_sampler": {}, "focal_loss": {"alpha": "inverse_frequency"}}})
    from transferkit.config import load_pretrain_config

    with pytest.raises(ConfigError, match="methods -> focal_loss: works for .* not for pretrain"):
        load_pretrain_config(raw={"corpus": {"sources": ["x"]}, "methods": {"focal_loss": {}}})
    with pytest.raises(ConfigError, match="methods -> balanced_sampler: works for text_classification, "
                                          "relation_extraction, not for token_classification"):
        load_config(raw={**base, "task": {"type": "token_classification"}, "methods": {"balanced_sampler": {}}})
    # labels found in the data: checked once they are known, still before the run folder exists
    data = write_csv(tmp_path / "d.csv", make_rows(60, labels=("a", "b", "c")))
    for methods, msg in (({"class_weights": {"weights": {"positive": 2.0}}}, "['positive'] are not labels of the "
                                                                             "training data (a, b, c)"),
                         ({"threshold_tuning": {}}, "needs a binary task; the training data has 3 labels")):
        cfg = write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs", methods=methods))
        result = CliRunner().invoke(app, ["finetune", str(cfg)])
        assert result.exit_code == 2 and msg in result.stderr, result.stderr
        assert not (tmp_path / "runs").exists()
