"""The MLflow registry: every finished run is a version with its lineage (parent version, data fingerprint,
run folder); promote / rollback move what `models:/NAME@production` resolves to; predict takes the reference."""

import json

import pytest
from typer.testing import CliRunner

from transferkit import registry
from transferkit.cli import app
from transferkit.config import load_config
from transferkit.recipes.finetune import run

from conftest import make_rows, tiny_config, write_csv


@pytest.fixture
def uri(tmp_path, monkeypatch):
    u = f"sqlite:///{tmp_path / 'reg.db'}"
    monkeypatch.setenv(registry.ENV, u)
    return u


def test_lineage_promote_rollback_and_references(tiny_model, tmp_path, uri):
    data = write_csv(tmp_path / "old.csv", make_rows(120, seed=1))
    cfg = tiny_config(tiny_model, data, tmp_path, name="senti", train={"epochs": 1})
    s = run(load_config(raw=cfg), progress=False)
    rec = json.loads((tmp_path / "senti" / "registry.json").read_text())
    assert rec["name"] == "senti" and rec["version"] == 1 and rec["parent"] is None
    marker = json.loads((tmp_path / "senti" / ".transferkit-run").read_text())

    new = write_csv(tmp_path / "new.csv", make_rows(120, seed=2))
    res = CliRunner().invoke(app, ["update", str(tmp_path / "senti"), "--data", str(new), "--name", "senti_v2", "-q",
                                   "train.epochs=1"])
    assert res.exit_code == 0, res.output
    rec2 = json.loads((tmp_path / "senti_v2" / "registry.json").read_text())
    assert rec2["name"] == "senti" and rec2["version"] == 2 and rec2["parent"] == "1"  # a version of the same model

    rows = registry.versions(uri, "senti")
    assert [r["version"] for r in rows] == [1, 2]
    assert rows[0]["kind"] == "finetune" and rows[1]["kind"] == "update" and rows[1]["parent"] == "1"
    assert rows[0]["data"] == marker["data"] and rows[0]["run_dir"] == str((tmp_path / "senti").resolve())
    assert rows[1]["aliases"] == ["candidate"]  # the newest version is the candidate

    # params and metrics are in the MLflow run
    from mlflow import MlflowClient

    r = MlflowClient(uri).get_run(rec["mlflow_run_id"])
    assert r.data.params["train.optimizer.lr"] == str(cfg["train"]["optimizer"]["lr"])
    assert r.data.metrics["test.accuracy"] == pytest.approx(s["test"]["accuracy"])

    registry.promote(uri, "senti", 1)
    assert registry.resolve("models:/senti@production") == (tmp_path / "senti").resolve()
    registry.promote(uri, "senti", 2)
    assert registry.resolve("models:/senti@production") == (tmp_path / "senti_v2").resolve()
    assert registry.resolve("models:/senti/1") == (tmp_path / "senti").resolve()
    back = registry.rollback(uri, "senti")
    assert back["version"] == 1 and back["previous"] == 2
    assert registry.resolve("models:/senti@production") == (tmp_path / "senti").resolve()
    with pytest.raises(registry.RegistryError, match="nothing to roll back"):
        registry.rollback(uri, "senti")

    # predict through a reference gives what the folder gives
    by_ref = CliRunner().invoke(app, ["predict", "models:/senti@production", "-i", str(data)])
    by_dir = CliRunner().invoke(app, ["predict", str(tmp_path / "senti"), "-i", str(data)])
    assert by_ref.exit_code == 0, by_ref.output
    assert by_ref.output == by_dir.output

    # clear errors
    res = CliRunner().invoke(app, ["models", "promote", "senti", "7"])
    assert res.exit_code == 2 and "has no version 7 (versions: 1, 2)" in res.output
    res = CliRunner().invoke(app, ["predict", "models:/senti@staging", "-i", str(data)])
    assert res.exit_code == 2 and "has no alias 'staging'" in res.output
    res = CliRunner().invoke(app, ["models", "list", "senti"])
    assert res.exit_code == 0 and "update" in res.output and "candidate" in res.output


def test_registry_off_and_failure_keep_the_run(tiny_model, tmp_path, monkeypatch, caplog):
    data = write_csv(tmp_path / "d.csv", make_rows(80, seed=1))
    cfg = tiny_config(tiny_model, data, tmp_path, train={"epochs": 1})
    run(load_config(raw=cfg), progress=False)  # conftest: TRANSFERKIT_REGISTRY=off
    assert not (tmp_path / "tiny" / "registry.json").exists()
    # an unusable registry: the run is complete all the same, with a warning
    monkeypatch.setenv(registry.ENV, "nosuchscheme://nowhere")
    import logging

    with caplog.at_level(logging.WARNING, logger="transferkit.registry"):
        run(load_config(raw={**cfg, "name": "second"}), progress=False)
    assert (tmp_path / "second" / "model" / "config.json").is_file() and (tmp_path / "second" / "report.md").is_file()
    assert not (tmp_path / "second" / "registry.json").exists()
    assert any("registering it in nosuchscheme://nowhere failed" in r.getMessage() for r in caplog.records)
    # unknown names are clear errors, not internal ones
    u = f"sqlite:///{tmp_path / 'r.db'}"
    with pytest.raises(registry.RegistryError, match="no registered model 'nosuch'"):
        registry.rollback(u, "nosuch")


def test_live_tracking_to_mlflow_and_the_tensorboard_switch(tiny_model, tmp_path, uri):
    from mlflow import MlflowClient

    data = write_csv(tmp_path / "d.csv", make_rows(120, seed=1))
    cfg = tiny_config(tiny_model, data, tmp_path, name="tracked", train={"epochs": 2, "log_every": 2},
                      tracking={"mlflow": True, "tensorboard": False})
    run(load_config(raw=cfg), progress=False)
    out = tmp_path / "tracked"
    rid = json.loads((out / "tracking.json").read_text())["mlflow_run_id"]
    assert json.loads((out / "registry.json").read_text())["mlflow_run_id"] == rid  # one MLflow run per run
    client = MlflowClient(uri)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in logged if r["split"] == "train"]
    history = client.get_metric_history(rid, "train/loss")
    assert [m.step for m in history] == train_steps and len(train_steps) >= 3
    assert [m.value for m in history] == pytest.approx([r["loss"] for r in logged if r["split"] == "train"])
    assert client.get_metric_history(rid, "validation/accuracy")
    assert not (out / "tensorboard").exists()
