"""A 2-process DDP run (torchrun + accelerate, gloo on CPU) matches 1 process within tolerance."""

import json
import os
import socket
import subprocess
import sys

import pytest

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
