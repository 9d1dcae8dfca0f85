"""Peak memory of a training run on a fixed tiny task (issue 19): a regression guard that is not a timing.

A fresh process (tests/unit/memory_probe.py) does a warm-up run, resets the kernel's peak-RSS counter (VmHWM,
through /proc/self/clear_refs), then a second run on 20x the rows and 3x the epochs; the peak's growth over the
RSS it started from must stay under the limit. Growth, not absolute RSS, and a fresh process: memory other
tests freed would hide growth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("memory_probe.py")
#: measured on AMD EPYC (glibc malloc): 5.4 to 7.1 MB (a 0.25 MB-per-step leak: 54 MB); room for noise, not a leak
LIMIT_MB = 20.0
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs is Linux's")


def _probe(tiny_model: Path, work: Path, *flags: str) -> dict:
    env = {**os.environ, "TRANSFERKIT_MALLOC": "system"}
    out = subprocess.run([sys.executable, str(PROBE), str(tiny_model), str(work), *flags], capture_output=True,
                         text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@LINUX
def test_peak_rss_growth_of_a_tiny_training_run(tiny_model, tmp_path):
    r = _probe(tiny_model, tmp_path)
    assert r["growth_mb"] < LIMIT_MB, f"peak RSS grew {r['growth_mb']:.1f} MB during a tiny run (limit {LIMIT_MB})"


@LINUX
def test_the_guard_sees_a_leak(tiny_model, tmp_path):
    """The same measurement with 0.25 MB kept at every loss computation (what keeping each batch's activations
    would do on a real model) crosses the limit."""
    r = _probe(tiny_model, tmp_path, "--leak")
    assert r["leaked"] > 150 and r["growth_mb"] > LIMIT_MB, r
