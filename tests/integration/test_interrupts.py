"""Runs in real processes, stopped the ways runs die: SIGKILL between checkpoints, SIGKILL while a
checkpoint is half-written, Ctrl-C (SIGINT) and SIGTERM, and a full disk (a real tmpfs). Each leaves a run
that --resume finishes with exactly the result of an uninterrupted run, or a clear message and nothing
half-written."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_rows, tiny_config, write_config, write_csv

CLI = [sys.executable, "-m", "transferkit.cli"]
LAUNCH = [sys.executable, str(Path(__file__).with_name("launch.py"))]  # the CLI with test instruments
SLOW = "methods.slow_steps.seconds=0.25"  # a test-only method: sleep after each step
STEPS = 36  # 3 epochs x 12 steps


def _env(**extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _config(tiny_model, data, root: Path, out: Path | None = None) -> Path:
    cfg = tiny_config(tiny_model, data, out or root / "runs",
                      train={"epochs": 3, "checkpoint_every": 2, "log_every": 3})
    return write_config(root / "run.yaml", cfg)


def _train_lines(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _last_step(run_dir: Path) -> int:
    steps = [x["step"] for x in _train_lines(run_dir) if x["split"] == "train"]
    return steps[-1] if steps else 0


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    root = tmp_path_factory.mktemp("interrupts")
    data = write_csv(root / "reviews.csv", make_rows(240, seed=1))
    cfg = _config(tiny_model, data, root)
    subprocess.run(CLI + ["finetune", str(cfg), "name=full", "-q"], check=True, env=_env(), timeout=300)
    return root, cfg, root / "runs/full"


def _assert_same_result(run_dir: Path, full: Path) -> None:
    a_m = json.loads((full / "metrics.json").read_text())
    b_m = json.loads((run_dir / "metrics.json").read_text())
    assert b_m["train"]["steps"] == a_m["train"]["steps"] == STEPS
    assert b_m["test"]["loss"] == pytest.approx(a_m["test"]["loss"], abs=1e-6)
    assert b_m["test"]["accuracy"] == a_m["test"]["accuracy"]
    a, b = load_file(full / "model/model.safetensors"), load_file(run_dir / "model/model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the log of the resumed run is the uninterrupted one's: nothing lost, nothing doubled
    strip = lambda rows: [(r["step"], r["split"], round(r.get("loss", 0), 5)) for r in rows]  # noqa: E731
    assert strip(_train_lines(run_dir)) == strip(_train_lines(full))
    assert not list(run_dir.rglob(".*.tmp-*")), "temporary files left behind"


def _start(cmd, **env):
    return subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc, run_dir: Path, step: int, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if _last_step(run_dir) >= step:
            return _last_step(run_dir)
        time.sleep(0.05)
    raise AssertionError(f"the run ended or stalled before step {step}: {proc.poll()}")


def _resume(cfg: Path, name: str) -> None:
    done = subprocess.run(LAUNCH + ["finetune", str(cfg), f"name={name}", "--resume", "-q"], env=_env(),
                          timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_sigkill_between_checkpoints(reference):
    root, cfg, full = reference
    run_dir = root / "runs/killed"
    proc = _start(LAUNCH + ["finetune", str(cfg), "name=killed", "-q", SLOW])
    killed_at = _wait_for_step(proc, run_dir, 17)  # mid second epoch, between checkpoints
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert 12 < saved["loop"]["step"] <= killed_at < STEPS
    assert saved["loop"]["epoch"] == 1 and saved["loop"]["batch_in_epoch"] > 0
    assert not (run_dir / "metrics.json").exists()
    _resume(cfg, "killed")
    _assert_same_result(run_dir, full)


def test_sigkill_while_a_checkpoint_is_half_written(reference):
    root, cfg, full = reference
    run_dir = root / "runs/midwrite"
    flag = root / "stalled.flag"
    proc = _start(LAUNCH + ["finetune", str(cfg), "name=midwrite", "-q"], STALL_AT_STEP="20", STALL_FLAG=str(flag))
    deadline = time.time() + 240
    while not flag.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()[1][-2000:]
    temporaries = list((run_dir / "checkpoints").glob(".last.pt.tmp-*"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0  # the kill lands mid-write
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    # the previous checkpoint is whole; the half-written file is only a temporary
    assert torch.load(run_dir / "checkpoints/last.pt", weights_only=False)["loop"]["step"] == 18
    _resume(cfg, "midwrite")
    _assert_same_result(run_dir, full)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_says_how_to_resume(reference, sig):
    root, cfg, full = reference
    name = f"stopped_{sig.name}"
    run_dir = root / "runs" / name
    proc = _start(LAUNCH + ["finetune", str(cfg), f"name={name}", "-q", SLOW])
    _wait_for_step(proc, run_dir, 15)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    what = "interrupted (Ctrl-C)" if sig == signal.SIGINT else "terminated (SIGTERM)"
    assert what in stderr and "saved a checkpoint" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    step = int(stderr.split("stopped after step ")[1].split()[0])
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
    assert saved["loop"]["step"] == step and 15 <= step < STEPS  # the very step it stopped at: nothing lost
    _resume(cfg, name)
    _assert_same_result(run_dir, full)


def _mount_tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_too_little_space_is_found_before_training(reference, tmp_path):
    root, cfg, _ = reference
    disk = tmp_path / "tiny_disk"
    if not _mount_tmpfs(disk, 64):
        pytest.skip("mounting a tmpfs needs root")
    try:
        small = tmp_path / "small.yaml"
        small.write_text(cfg.read_text().replace(str(root / "runs"), str(disk)))
        done = subprocess.run(CLI + ["finetune", str(small), "-q"], env=_env(), timeout=300, capture_output=True,
                              text=True)
        assert done.returncode == 2 and "not enough free space for the run folder" in done.stderr, done.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_full_disk_keeps_the_last_checkpoint_and_resumes(reference):
    """A real small file system: the second checkpoint does not fit. The run stops with 'no space left on
    device', leaves no temporary file, keeps the first checkpoint; given space, --resume finishes it."""
    root, cfg, full = reference
    weights = (full / "model/model.safetensors").stat().st_size
    # room for the up-front check (5x the weights) and the first checkpoint, not for rewriting it (about 7x)
    size_kb = int(6 * weights // 1024) + 96
    disk = root / "small_disk"
    if not _mount_tmpfs(disk, size_kb):
        pytest.skip("mounting a tmpfs needs root")
    try:
        small = root / "small.yaml"
        small.write_text(cfg.read_text().replace(str(root / "runs"), str(disk)))
        done = subprocess.run(CLI + ["finetune", str(small), "name=full_disk", "-q"], env=_env(), timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 2, done.stderr[-3000:]
        assert "no space left on device" in done.stderr and "--resume" in done.stderr
        assert "Traceback" not in done.stderr
        run_dir = disk / "full_disk"
        assert not list(run_dir.rglob(".*.tmp-*")), "a temporary file keeps the disk full"
        saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=False)
        assert 0 < saved["loop"]["step"] < STEPS
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        _resume(small, "full_disk")
        _assert_same_result(run_dir, full)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
