"""Runs in real processes: SIGKILL mid-epoch then --resume equals an uninterrupted run; a 2-process DDP
run (torchrun + accelerate, gloo on CPU) matches 1 process within tolerance."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config, write_config

CLI = [sys.executable, "-m", "transferkit.cli"]


def _env(**extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.update(extra)
    return env


def _config(tiny_model, sentiment_csv, tmp_path, **train):
    cfg = tiny_config(tiny_model, sentiment_csv, tmp_path / "runs",
                      train={"epochs": 3, "checkpoint_every": 2, "log_every": 3, **train})
    return write_config(tmp_path / "run.yaml", cfg)


def _train_lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_equals_uninterrupted(tiny_model, sentiment_csv, tmp_path):
    cfg = _config(tiny_model, sentiment_csv, tmp_path)
    subprocess.run(CLI + ["finetune", str(cfg), "name=full", "-q"], check=True, env=_env(), timeout=300)

    killed_dir = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(CLI + ["finetune", str(cfg), "name=killed", "-q"],
                            env=_env(TRANSFERKIT_DEBUG_STEP_DELAY="0.25"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        log = killed_dir / "metrics.jsonl"
        steps = [x["step"] for x in _train_lines(killed_dir) if x["split"] == "train"] if log.exists() else []
        if steps and steps[-1] >= 17:  # mid second epoch (12 steps per epoch), between checkpoints
            proc.send_signal(signal.SIGKILL)
            killed_at = steps[-1]
            break
        time.sleep(0.05)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    saved = torch.load(killed_dir / "checkpoints/last.pt", weights_only=False)
    assert 12 < saved["loop"]["step"] <= killed_at < 36
    assert saved["loop"]["epoch"] == 1 and saved["loop"]["batch_in_epoch"] > 0
    assert not (killed_dir / "metrics.json").exists()
    # a kill during a checkpoint write leaves only a temporary file (last.pt stays whole); resuming removes it
    (killed_dir / "checkpoints/.last.pt.tmp-999999").write_bytes(b"half a checkpoint")

    subprocess.run(CLI + ["finetune", str(cfg), "name=killed", "--resume", "-q"], check=True, env=_env(),
                   timeout=300)
    assert not list(killed_dir.glob("checkpoints/.*tmp*"))
    full = json.loads((tmp_path / "runs/full/metrics.json").read_text())
    resumed = json.loads((killed_dir / "metrics.json").read_text())
    assert resumed["train"]["steps"] == full["train"]["steps"] == 36
    assert resumed["test"]["loss"] == pytest.approx(full["test"]["loss"], abs=1e-6)
    assert resumed["test"]["accuracy"] == full["test"]["accuracy"]
    a = load_file(tmp_path / "runs/full/model/model.safetensors")
    b = load_file(killed_dir / "model/model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the log of the resumed run is the uninterrupted one's: nothing lost, nothing doubled
    strip = lambda rows: [(r["step"], r["split"], round(r.get("loss", 0), 5)) for r in rows]  # noqa: E731
    assert strip(_train_lines(killed_dir)) == strip(_train_lines(tmp_path / "runs/full"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process(tiny_model, sentiment_csv, tmp_path):
    cfg = _config(tiny_model, sentiment_csv, tmp_path, epochs=4, checkpoint_every=100, log_every=5)
    # No dropout: then a DDP step (each global batch split between the processes, gradients averaged)
    # computes the same update as one process, and the runs agree up to floating-point reduction order.
    cfg.write_text(cfg.read_text().replace("max_length: 32", "max_length: 32\n  dropout: 0.0"))
    subprocess.run(CLI + ["finetune", str(cfg), "name=single", "-q"], check=True, env=_env(), timeout=300)
    # On CPU, `accelerate launch --cpu --num_processes 2` starts ONE process (its multi-CPU path is mpirun);
    # torchrun starts two, and accelerate picks up the process group (MULTI_CPU, gloo).
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
              "--master_port", str(_free_port()), "-m", "transferkit.cli"]
    done = subprocess.run(launch + ["finetune", str(cfg), "name=ddp", "-q"], env=_env(), timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    single = json.loads((tmp_path / "runs/single/metrics.json").read_text())
    ddp = json.loads((tmp_path / "runs/ddp/metrics.json").read_text())
    assert (ddp["train"]["processes"], single["train"]["processes"]) == (2, 1)
    assert ddp["train"]["steps"] == single["train"]["steps"]
    assert single["test"]["accuracy"] > 0.8  # it learned, so agreement below is not two flat lines
    assert ddp["test"]["accuracy"] == single["test"]["accuracy"]
    assert ddp["test"]["loss"] == pytest.approx(single["test"]["loss"], abs=1e-3)
    # every test example scored exactly once across the processes
    assert sum(map(sum, ddp["test"]["confusion_matrix"])) == ddp["data"]["sizes"]["test"] == 24
