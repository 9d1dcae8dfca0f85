"""A run folder is either complete-and-resumable or absent, and transferkit never deletes or writes into a
folder it did not create: --overwrite only replaces run folders, --resume refuses a changed config or
changed data, a damaged checkpoint is named, and a run that fails before its first checkpoint leaves
nothing behind."""

import json
import shutil

import pytest
import torch
import yaml
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.recipes.rundir import MARKER

from conftest import make_rows, tiny_config, tree_snapshot, write_config, write_csv

runner = CliRunner()


def _cfg(tiny_model, data, tmp_path, **sections):
    sections.setdefault("train", {"max_steps": 6, "checkpoint_every": 2, "eval_every": 3})
    train = {"optimizer": {"lr": 3e-3}, "batch_size": 16, "seed": 7, "log_every": 5, **sections.pop("train")}
    return write_config(tmp_path / "run.yaml", tiny_config(tiny_model, data, tmp_path / "runs", train=train,
                                                           **sections))


def _finetune(path, *extra):
    return runner.invoke(app, ["finetune", str(path), "-q", *map(str, extra)])


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "reviews.csv", make_rows(120, seed=1))


def test_overwrite_refuses_a_folder_of_the_users_files(tiny_model, data, tmp_path):
    mine = tmp_path / "project"
    mine.mkdir()
    write_csv(mine / "train.csv", make_rows(20))
    (mine / "notes.txt").write_text("my notes")
    before = tree_snapshot(tmp_path)
    for out_dir in (str(mine), str(tmp_path / "{name}")):  # output.dir = the user's folder; name = 'project'
        cfg = _cfg(tiny_model, data, tmp_path, name="project", output={"dir": out_dir})
        before = tree_snapshot(tmp_path)
        result = _finetune(cfg, "--overwrite")
        assert result.exit_code == 2, result.stderr
        assert "is not a transferkit run folder" in result.stderr and "notes.txt, train.csv" in result.stderr
        assert tree_snapshot(tmp_path) == before
    # a folder of run folders (what name=. used to resolve to) is not a run folder either
    ok = _finetune(_cfg(tiny_model, data, tmp_path, name="a"))
    assert ok.exit_code == 0, ok.stderr
    cfg = _cfg(tiny_model, data, tmp_path, output={"dir": str(tmp_path / "runs")})
    before = tree_snapshot(tmp_path)
    result = _finetune(cfg, "--overwrite")
    assert result.exit_code == 2 and "'%s' exists and is not a transferkit run folder" % (tmp_path / "runs") in result.stderr
    assert "a/" in result.stderr and tree_snapshot(tmp_path) == before


def test_overwrite_replaces_only_the_run_folder(tiny_model, data, tmp_path):
    for name in ("a", "b"):
        assert _finetune(_cfg(tiny_model, data, tmp_path, name=name)).exit_code == 0
    run_a = tmp_path / "runs/a"
    assert json.loads((run_a / MARKER).read_text())["kind"] == "finetune"
    again = _finetune(_cfg(tiny_model, data, tmp_path, name="a"))
    assert again.exit_code == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    # a file the user put inside the run folder would be deleted with it: refused, named
    (run_a / "notes.txt").write_text("my analysis")
    before = tree_snapshot(tmp_path)
    result = _finetune(_cfg(tiny_model, data, tmp_path, name="a"), "--overwrite")
    assert result.exit_code == 2 and "also holds files transferkit did not write (notes.txt)" in result.stderr
    assert tree_snapshot(tmp_path) == before
    (run_a / "notes.txt").unlink()
    (run_a / "model/model.safetensors").write_bytes(b"old weights")
    others = tree_snapshot(tmp_path, skip=run_a)
    assert _finetune(_cfg(tiny_model, data, tmp_path, name="a"), "--overwrite").exit_code == 0
    assert (run_a / "model/model.safetensors").read_bytes() != b"old weights"
    assert tree_snapshot(tmp_path, skip=run_a) == others


def test_folder_from_before_markers_counts_only_when_it_holds_run_files(tiny_model, data, tmp_path):
    old = tmp_path / "runs/tiny"
    old.mkdir(parents=True)
    (old / "config.resolved.yaml").write_text("name: tiny\n")
    (old / "metrics.json").write_text("{}")
    assert _finetune(_cfg(tiny_model, data, tmp_path), "--overwrite").exit_code == 0
    assert (old / MARKER).is_file() and json.loads((old / "metrics.json").read_text())["name"] == "tiny"
    user = tmp_path / "runs/mine"
    user.mkdir()
    (user / "config.resolved.yaml").write_text("x: 1\n")
    (user / "thesis.tex").write_text("do not delete")
    result = _finetune(_cfg(tiny_model, data, tmp_path, name="mine"), "--overwrite")
    assert result.exit_code == 2 and "thesis.tex" in result.stderr and (user / "thesis.tex").is_file()


def test_resume_refuses_a_changed_config_and_lists_the_fields(tiny_model, data, tmp_path):
    cfg = _cfg(tiny_model, data, tmp_path)
    assert _finetune(cfg).exit_code == 0
    run_dir = tmp_path / "runs/tiny"
    before = tree_snapshot(run_dir)
    result = _finetune(cfg, "--resume", "train.max_steps=20", "train.optimizer.lr=0.001")
    assert result.exit_code == 2, result.stderr
    assert "the config differs from the run's" in result.stderr and "2 field(s)" in result.stderr
    assert "train.max_steps: 6 in the run, 20 now" in result.stderr
    assert "train.optimizer.lr: 0.003 in the run, 0.001 now" in result.stderr
    result = _finetune(cfg, "--resume", "task.pooling=mean")
    assert result.exit_code == 2 and "task.pooling: 'cls' in the run, 'mean' now" in result.stderr
    assert tree_snapshot(run_dir) == before  # config.resolved.yaml and model/task.json untouched
    # what does not change the computation is allowed, and recorded
    result = _finetune(cfg, "--resume", "train.checkpoint_every=3")
    assert result.exit_code == 0, result.stderr
    record = json.loads((run_dir / "resumes.jsonl").read_text().splitlines()[-1])
    assert record["changed"] == {"train.checkpoint_every": [2, 3]}
    assert yaml.safe_load((run_dir / "config.resolved.yaml").read_text())["train"]["checkpoint_every"] == 3
    assert _finetune(cfg, "--resume", "--overwrite").exit_code == 2


def test_resume_refuses_changed_data(tiny_model, data, tmp_path):
    cfg = _cfg(tiny_model, data, tmp_path)
    assert _finetune(cfg).exit_code == 0
    write_csv(data, make_rows(120, seed=2))  # the same file name, other rows
    result = _finetune(cfg, "--resume")
    assert result.exit_code == 2 and "the data differ from the data run" in result.stderr


def test_damaged_last_checkpoint_is_named(tiny_model, data, tmp_path):
    cfg = _cfg(tiny_model, data, tmp_path)
    assert _finetune(cfg).exit_code == 0
    last = tmp_path / "runs/tiny/checkpoints/last.pt"
    full = last.read_bytes()
    last.write_bytes(full[: len(full) // 2])  # truncated
    result = _finetune(cfg, "--resume")
    assert result.exit_code == 2, result.stderr
    assert f"checkpoint '{last}' is damaged" in result.stderr
    assert "best-model checkpoint" in result.stderr and "is intact" in result.stderr
    assert "--overwrite instead of --resume" in result.stderr and "Traceback" not in result.stderr
    last.write_bytes(b"not a checkpoint at all")
    before = tree_snapshot(tmp_path)
    result = _finetune(cfg, "--resume", "output.dir=" + str(tmp_path / "runs/{name}"), "name=tiny")
    assert "is damaged" in result.stderr and tree_snapshot(tmp_path) == before  # no config or resume record written
    # a finished run whose checkpoint is gone is not silently trained again from step 0
    shutil.move(last, str(last) + ".damaged")
    result = _finetune(cfg, "--resume")
    assert result.exit_code == 2 and "has no checkpoint to resume from" in result.stderr
    # following the advice works
    assert _finetune(cfg, "--overwrite").exit_code == 0
    assert torch.load(last, weights_only=False)["loop"]["step"] == 6


def test_failure_before_the_first_checkpoint_leaves_no_folder(tiny_model, data, tmp_path, monkeypatch):
    from transferkit.training import loop

    cfg = _cfg(tiny_model, data, tmp_path)

    def broken(*a, **k):
        raise RuntimeError("simulated bug in the first step")

    monkeypatch.setattr(loop, "build_optimizer", broken)
    result = _finetune(cfg)
    assert result.exit_code == 1 and "internal error: RuntimeError: simulated bug" in result.stderr
    __import__("os").remove(result.stderr.split("The traceback is in ")[1].split(";")[0].strip())
    assert not (tmp_path / "runs/tiny").exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "build_optimizer", interrupted)
    result = _finetune(cfg)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert not (tmp_path / "runs/tiny").exists()
    monkeypatch.undo()
    assert _finetune(cfg).exit_code == 0  # the rerun is not blocked by a half-made folder


def test_curve_refuses_a_folder_it_did_not_make(tiny_model, data, tmp_path):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "paper.md").write_text("draft")
    cfg = _cfg(tiny_model, data, tmp_path, output={"dir": str(mine)})
    result = runner.invoke(app, ["curve", str(cfg), "--labels", "20", "--seeds", "1", "-q"])
    assert result.exit_code == 2 and "not a transferkit curve folder" in result.stderr and "paper.md" in result.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["paper.md"]
    for bad in (["--labels", "-5"], ["--labels", "ten"], ["--seeds", ""]):
        result = runner.invoke(app, ["curve", str(cfg), *bad, "-q"])
        assert result.exit_code == 2 and bad[0] in result.stderr, result.stderr
