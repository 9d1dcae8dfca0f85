"""The CLI's allocator switch: re-executes itself once with jemalloc preloaded, and only when it should."""

from __future__ import annotations

import subprocess
import sys

import pytest

from transferkit import allocator


def test_reexec_preloads_jemalloc_once(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "jemalloc_library", lambda: "/lib/libjemalloc.so.2")
    monkeypatch.setattr(allocator.os, "execve", lambda exe, argv, env: calls.append((exe, argv, env)))
    monkeypatch.setenv("LD_PRELOAD", "/lib/other.so")
    monkeypatch.delenv(allocator.ENV, raising=False)
    # the interpreter's own command line: a script that wraps main() (tests/integration/launch.py) runs again
    allocator.reexec_with_jemalloc(["python3", "tests/launch.py", "finetune", "a.yaml", "train.epochs=1"])
    assert len(calls) == 1
    exe, argv, env = calls[0]
    assert exe == sys.executable and argv == [sys.executable, "tests/launch.py", "finetune", "a.yaml",
                                              "train.epochs=1"]
    assert env["LD_PRELOAD"] == "/lib/libjemalloc.so.2 /lib/other.so"
    calls.clear()
    monkeypatch.setenv("LD_PRELOAD", env["LD_PRELOAD"])  # the re-executed process: no second time
    allocator.reexec_with_jemalloc(["x"])
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv(allocator.ENV, "system")  # the user's choice
    allocator.reexec_with_jemalloc(["x"])
    monkeypatch.delenv(allocator.ENV)
    monkeypatch.setattr(allocator, "jemalloc_library", lambda: None)  # not installed
    allocator.reexec_with_jemalloc(["x"])
    assert calls == []


@pytest.mark.skipif(allocator.jemalloc_library() is None, reason="libjemalloc2 not installed")
def test_the_command_runs_on_jemalloc():
    out = subprocess.run([sys.executable, "-m", "transferkit.cli", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "finetune" in out.stdout
    code = "from transferkit.allocator import current; from transferkit.cli import main; print(current()); main()"
    out = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120)
    # main() re-executed the same command line with jemalloc: the second run printed 'jemalloc'
    assert out.returncode == 0 and out.stdout.splitlines()[:2] == ["glibc", "jemalloc"], out.stdout[:300]
    probe = subprocess.run([sys.executable, "-c", "from transferkit.allocator import current; print(current())"],
                           capture_output=True, text=True, env={"LD_PRELOAD": allocator.jemalloc_library() or ""})
    assert probe.stdout.strip() == "jemalloc"
