"""transferkit search: Optuna over config fields, pruned trials stop early, a killed search resumes with its
finished trials kept, best.yaml is a valid config with the best values, bad spaces are config errors."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.config import load_config
from transferkit.errors import ConfigError
from transferkit.recipes import search as srch

from conftest import make_rows, tiny_config, write_config, write_csv


def _config(tiny_model, tmp_path, **search):
    data = write_csv(tmp_path / "d.csv", make_rows(240, seed=1))
    cfg = tiny_config(tiny_model, data, tmp_path, name="s", train={"epochs": 6, "eval_every": 8, "optimizer":
                                                                   {"lr": 1e-2}})
    cfg["search"] = {"trials": 3, "startup_trials": 1, "heartbeat_s": 1,
                     "space": {"train.optimizer.lr": {"choices": [1e-2, 1e-7]}}, **search}
    return write_config(tmp_path / "search.yaml", cfg)


def test_pruned_trials_stop_early_and_the_best_config_is_written(tiny_model, tmp_path):
    # validation loss: with 1e-2 it falls after ~30 steps (240 examples), with 1e-7 it stays at ln 2
    path = _config(tiny_model, tmp_path, metric="loss", warmup_steps=36,
                   enqueue=[{"train.optimizer.lr": 1e-2}, {"train.optimizer.lr": 1e-7}])
    s = srch.run(path)
    rows = {int(r["trial"]): r for r in __import__("csv").DictReader(open(tmp_path / "s_search" / "trials.csv"))}
    assert rows[0]["state"] == "complete" and rows[1]["state"] == "pruned"
    full_steps = int(rows[0]["steps"])
    assert int(rows[1]["last_step"]) < full_steps  # stopped at its first evaluation, below the median
    assert s["best_params"] == {"train.optimizer.lr": 1e-2} and s["direction"] == "minimize"
    best = yaml.safe_load((tmp_path / "s_search" / "best.yaml").read_text())
    assert "search" not in best and best["train"]["optimizer"]["lr"] == 1e-2
    load_config(raw=best)  # a valid run config
    assert (tmp_path / "s_search" / "history.png").is_file()
    assert "| 1 | pruned |" in (tmp_path / "s_search" / "trials.md").read_text()
    assert sum(s["trials"].values()) == 3


def test_a_killed_search_resumes_with_its_finished_trials(tiny_model, tmp_path):
    path = _config(tiny_model, tmp_path, trials=4, pruner="none",
                   space={"train.optimizer.lr": {"low": 1e-3, "high": 1e-2, "log": True}})
    db = tmp_path / "s_search" / "study.db"
    env = {**os.environ, "TRANSFERKIT_REGISTRY": "off"}
    p = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "search", str(path), "-q"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finished() -> list[tuple[int, float]]:
        if not db.exists():
            return []
        with sqlite3.connect(db) as con:
            try:
                return con.execute("select t.number, v.value from trials t join trial_values v on "
                                   "t.trial_id = v.trial_id where t.state = 'COMPLETE' order by t.number").fetchall()
            except sqlite3.OperationalError:
                return []

    deadline = time.time() + 240
    while len(finished()) < 2 and time.time() < deadline and p.poll() is None:
        time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = finished()
    assert 2 <= len(before) < 4, before
    time.sleep(2.5)  # the killed trial's heartbeat goes stale (2 x heartbeat_s)
    res = CliRunner().invoke(app, ["search", str(path), "-q"])
    assert res.exit_code == 0, res.output
    after = finished()
    assert after[: len(before)] == before  # the finished trials kept, values unchanged
    s = json.loads((tmp_path / "s_search" / "search.json").read_text())
    assert s["trials"]["complete"] == 4 and s["trials"]["running"] == 0


def test_search_config_errors(tiny_model, tmp_path):
    path = _config(tiny_model, tmp_path, space={"train.optimiser.lr": {"low": 1e-4, "high": 1e-2}})
    with pytest.raises(ConfigError, match=r"search -> space -> train.optimiser.lr .*optimizer"):
        srch.run(path)
    path = _config(tiny_model, tmp_path, space={"train.optimizer.lr": {"low": 1e-2, "high": 1e-4}})
    with pytest.raises(ConfigError, match="low .* must be smaller than high"):
        srch.run(path)
    path = _config(tiny_model, tmp_path, metric="rougeL")
    with pytest.raises(ConfigError, match="search -> metric: 'rougeL' is not a validation metric"):
        srch.run(path)
    cfg = yaml.safe_load(path.read_text())
    del cfg["search"]
    write_config(path, cfg)
    with pytest.raises(ConfigError, match="no `search:` section"):
        srch.run(path)
