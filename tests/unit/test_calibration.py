"""Calibration: ECE by hand, temperature scaling lowers validation NLL and keeps every argmax, and the fitted
temperature is saved with the model and applied by predict; the report shows both calibrations."""

import json

import numpy as np
import pytest

from transferkit.config import load_config
from transferkit.errors import ConfigError
from transferkit.evaluation.calibration import ece, fit_temperature, nll, reliability, rescale
from transferkit.recipes.finetune import run

from conftest import tiny_config


def test_ece_equals_a_hand_computation():
    # 4 predictions: two at confidence 0.9 (one right), two at 0.6 (both right), 15 bins
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    gold = np.array([0, 0, 0, 1])
    rel = reliability(probs, gold)
    # bin (0.867, 0.933]: conf 0.9, acc 0.5 -> gap 0.4; bin (0.533, 0.6]: conf 0.6, acc 1.0 -> gap 0.4
    assert rel["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert rel["mce"] == pytest.approx(0.4)
    assert [b["count"] for b in rel["bins"]] == [2, 2]
    assert ece(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == pytest.approx(0.0)


def test_temperature_scaling_lowers_nll_and_keeps_the_argmax():
    rng = np.random.default_rng(0)
    n, c = 600, 3
    gold = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), gold] += 1.0  # informative, and then made overconfident by a factor of 4
    probs = rescale(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.25)
    t = fit_temperature(probs, gold)
    assert 3.0 < t < 5.5  # close to the factor that was put in
    after = rescale(probs, t)
    assert nll(after, gold) < nll(probs, gold) - 0.1
    assert ece(after, gold) < ece(probs, gold)
    assert np.array_equal(after.argmax(1), probs.argmax(1))
    assert rescale(after, 1.0 / t) == pytest.approx(probs, abs=1e-9)  # rescaling back restores the probabilities


def test_temperature_is_saved_applied_by_predict_and_reported(tiny_model, sentiment_csv, tmp_path):
    from transferkit.deploy.predictor import Predictor

    # a high learning rate for many epochs: an overconfident model, so the temperature is not 1
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path, train={"epochs": 6, "optimizer": {"lr": 1e-2}},
                      methods={"temperature_scaling": {}})
    m = run(load_config(raw=cfg), progress=False)
    fitted = m["methods"][0]
    assert fitted["method"] == "temperature_scaling"
    assert fitted["validation_nll_after"] <= fitted["validation_nll_before"] + 1e-9
    t = fitted["temperature"]
    assert t != pytest.approx(1.0, abs=1e-3)
    saved = json.loads((tmp_path / "tiny/model/task.json").read_text())
    assert saved["temperature"] == pytest.approx(t)
    test = m["test"]
    assert test["temperature"] == pytest.approx(t) and 0.0 <= test["ece"] <= 1.0
    assert test["nll"] <= test["nll_uncalibrated"] + 0.05  # fitted on validation, measured on test
    assert (tmp_path / "tiny/reliability.png").is_file()
    report = (tmp_path / "tiny/report.md").read_text()
    assert "## Calibration (test)" in report and "uncalibrated (temperature 1)" in report
    pred = Predictor.load(tmp_path / "tiny")
    assert pred.task.temperature == pytest.approx(t)
    texts = ["a great film", "a dull film"]
    probs = pred.predict_scores(texts)
    pred.task.temperature = 1.0  # the same model without its temperature
    raw = pred.predict_scores(texts)
    assert not np.allclose(probs, raw, atol=1e-4)  # predict applied the saved temperature...
    assert rescale(raw, t) == pytest.approx(probs, abs=1e-6)  # ... and it is exactly softmax(logits / T)
    assert np.array_equal(probs.argmax(1), raw.argmax(1))


def test_temperature_scaling_config_errors(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="methods -> temperature_scaling: for single-label tasks"):
        load_config(raw={"data": {"source": "x"}, "task": {"multilabel": True},
                         "methods": {"temperature_scaling": {}}})
    with pytest.raises(ConfigError, match="min_temperature \\(5.0\\) must be below max_temperature \\(2.0\\)"):
        load_config(raw={"data": {"source": "x"},
                         "methods": {"temperature_scaling": {"min_temperature": 5.0, "max_temperature": 2.0}}})


def test_evaluate_calibration_suite_on_a_run_folder(tiny_model, sentiment_csv, tmp_path):
    from typer.testing import CliRunner

    from transferkit.cli import app

    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path, train={"epochs": 6, "optimizer": {"lr": 1e-2}})
    run(load_config(raw=cfg), progress=False)
    run_dir = tmp_path / "tiny"
    assert "temperature" not in json.loads((run_dir / "model/task.json").read_text())
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--suite", "calibration"])
    assert res.exit_code == 0, res.output
    r = json.loads((run_dir / "trust/trust.json").read_text())["calibration"]
    assert r["validation"]["nll_after"] <= r["validation"]["nll_before"] + 1e-9
    assert r["saved_temperature"] == 1.0 and r["fitted_temperature"] != pytest.approx(1.0, abs=1e-3)
    assert len(r["test"]) == 2 and len({round(t["accuracy"], 9) for t in r["test"].values()}) == 1  # argmax kept
    assert (run_dir / "trust/reliability.png").is_file() and "| fitted temperature" in (run_dir / "trust/trust.md").read_text()
    assert "temperature" not in json.loads((run_dir / "model/task.json").read_text())  # not without --apply
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--apply"])
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "model/task.json").read_text())["temperature"] == pytest.approx(r["fitted_temperature"])
    res = CliRunner().invoke(app, ["evaluate", str(run_dir), "--suite", "calibraton"])
    assert res.exit_code != 0 and "unknown suite(s) ['calibraton']" in res.output
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--suite", "calibration"])
    assert res.exit_code != 0 and "is not a finished fine-tuning run" in res.output
