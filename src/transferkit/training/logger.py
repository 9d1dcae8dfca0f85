"""Where metrics go: metrics.jsonl (always, every logged step) and TensorBoard event files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, resume_offset: int | None = None,
                 purge_step: int | None = None, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.history: list[dict[str, Any]] = []
        self._tb = None
        if not enabled:
            return
        if resume_offset is not None and self.path.exists():
            # Drop what a killed run logged after its last checkpoint: the resumed run logs it again.
            with open(self.path, "r+b") as f:
                f.truncate(resume_offset)
            self.history = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        elif self.path.exists():
            self.path.unlink()
        if not tensorboard:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge_step)
        except ImportError:  # tensorboard is a dependency, but a stripped environment should still train
            log.warning("tensorboard is not installed: writing metrics.jsonl only")

    def offset(self) -> int:
        return self.path.stat().st_size if self.enabled and self.path.exists() else 0

    def log(self, step: int, values: dict[str, Any], split: str) -> None:
        record = {"step": step, "split": split, **values}
        self.history.append(record)
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        """Flush and stop TensorBoard's writer thread (idempotent; also on failure, so that the thread does not
        write into a run folder that is being removed)."""
        tb, self._tb = self._tb, None
        if tb is not None:
            try:
                tb.flush()
                tb.close()
            except OSError:  # a full disk: metrics.jsonl is the record; the events file may be short
                pass

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
