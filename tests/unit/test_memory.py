"""Peak memory of a training run on a fixed tiny task (issue 19): a regression guard measured in this process.

The kernel's peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs, a warm-up run loads every code
path first (imports and caches are not what is measured), then a second identical run's peak growth over the
RSS it started from must stay under the limit. Growth, not absolute RSS: what other tests left in the process
does not count.
"""

from __future__ import annotations

import gc
import sys

import pytest

from transferkit.config import load_config
from transferkit.recipes import finetune

from conftest import make_rows, tiny_config, write_csv

#: measured on AMD EPYC (glibc malloc, inside pytest): 5.4 and 6.0 MB; the limit leaves room for noise, not for
#: a leak (the second test shows one of 0.25 MB per step crossing it)
LIMIT_MB = 20.0


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _growth(tiny_model, tmp_path) -> float:
    small = write_csv(tmp_path / "small.csv", make_rows(60, seed=3))
    data = write_csv(tmp_path / "d.csv", make_rows(1200, seed=3))

    def run(name: str, rows, epochs: int) -> None:
        cfg = tiny_config(tiny_model, rows, tmp_path, name=name, train={"epochs": epochs, "seed": 7, "batch_size": 16},
                          compare={"linear_probe": True})
        finetune.run(load_config(raw=cfg), progress=False)

    run("warmup", small, 1)  # every code path once, on 60 rows: imports, caches, the report's fonts
    gc.collect()
    before = _status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    assert _status("VmHWM:") <= before + 1
    run("measured", data, 3)  # 20x the rows, 3x the epochs: what grows with the data or the steps shows
    return _status("VmHWM:") - before


LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs is Linux's")


@LINUX
def test_peak_rss_growth_of_a_tiny_training_run(tiny_model, tmp_path):
    growth = _growth(tiny_model, tmp_path)
    assert growth < LIMIT_MB, f"peak RSS grew {growth:.1f} MB during a tiny run (limit {LIMIT_MB} MB)"


@LINUX
def test_the_guard_sees_a_leak(tiny_model, tmp_path, monkeypatch):
    """The same measurement with 0.25 MB kept at every training step (what keeping each batch's activations
    would do on a real model) crosses the limit."""
    import torch

    from transferkit.tasks.classification import ClassificationTask

    kept: list[torch.Tensor] = []
    loss = ClassificationTask.loss

    def leaky(self, outputs, batch):
        kept.append(torch.ones(64 * 1024))
        return loss(self, outputs, batch)

    monkeypatch.setattr(ClassificationTask, "loss", leaky)
    growth = _growth(tiny_model, tmp_path)
    assert growth > LIMIT_MB, f"a leak of {len(kept)} x 0.25 MB went unseen: growth {growth:.1f} MB"
