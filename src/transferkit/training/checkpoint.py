"""Atomic, resumable checkpoints: a crash mid-write never leaves a truncated file behind, a full disk is
reported as such (and the previous file stays usable), and a damaged file is named when it is read."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.errors import CheckpointError, StorageError

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
MB = 1024 * 1024


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors and arrays in a nested dict/list: about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _size(n: int) -> str:
    return f"{n / MB:.0f} MB" if n >= 10 * MB else f"{n / MB:.1f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def _write_failed(path: Path, e: BaseException | None, need: int) -> StorageError:
    free = free_bytes(path.parent)
    chain: list[BaseException] = []
    x = e
    while x is not None and len(chain) < 5:  # torch raises its own RuntimeError while handling the OSError
        chain.append(x)
        x = x.__cause__ or x.__context__
    full = any(isinstance(x, OSError) and x.errno in DISK_FULL for x in chain) or free < max(need, MB)
    if full or e is None:
        what = (f"no space left on device while writing '{path}' ({_size(free)} free"
                + (f", about {_size(need)} needed" if need else "") + ")")
    else:
        what = f"could not write '{path}': {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    return StorageError(
        f"{what}. Nothing half-written was left behind and the previous '{path.name}' (if any) is unchanged. "
        "Free some space (or set output.dir to a larger disk), then rerun the same command with --resume."
    )


@contextlib.contextmanager
def _atomic(path: Path, need: int = 0):
    """Yield a temporary path next to `path`; on success it replaces `path`, on any failure it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if need and free_bytes(path.parent) < need:
        raise _write_failed(path, None, need)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # torch reports a failed write as RuntimeError ("[enforce fail at inline_container.cc] ... file write
        # failed", or "unexpected pos" while it handles the OSError of a full disk)
        if isinstance(e, (OSError, RuntimeError)):
            raise _write_failed(path, e, need) from None
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    with _atomic(path, need=tensor_bytes(obj)) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporary files left by a writer that was killed mid-write (their targets are intact)."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    with _atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; CheckpointError names the file when it is truncated or corrupted."""
    try:
        # weights_only=False: the file holds optimizer and RNG state that we wrote ourselves.
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, bad pickle, not a checkpoint at all: all mean "damaged"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if len(reason) > 240:
            reason = reason[:240].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(str(path), f"{type(e).__name__}: {reason}") from None


def damaged_last_advice(ckpt_dir: Path, damaged: str) -> str:
    """What is intact and what to do, when the resumable checkpoint cannot be read."""
    best = Path(ckpt_dir) / "best_model.pt"
    if not best.exists():
        kept = "There is no best-model checkpoint in this run yet."
    elif readable(best):
        kept = f"The best-model checkpoint '{best}' is intact."
    else:
        kept = f"The best-model checkpoint '{best}' is damaged too."
    return (f"The run cannot continue from it. {kept} To train this run again from step 0, rerun the command "
            "with --overwrite instead of --resume (copy out anything of the run you want to keep first).")


def readable(path: Path) -> bool:
    try:
        load(path)
        return True
    except (CheckpointError, FileNotFoundError):
        return False
