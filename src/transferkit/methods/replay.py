"""Experience replay for continual updates: a stratified sample of the examples the parent run kept
(replay.jsonl, `output.replay_sample` of them) is mixed into the new training split, so the update keeps
seeing the old task while it learns the new data. Only the training split changes: validation and test are
the new data's own."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import DATA, Method, MethodConfig

log = logging.getLogger(__name__)


class ReplayConfig(MethodConfig):
    method: ClassVar[str] = "replay"
    summary: ClassVar[str] = "mix examples kept by the parent run into the new training data (continual updates)"

    size: int = Field(1000, ge=1, description="Parent examples mixed in (a stratified sample of the ones it kept; "
                      "at most all of them).")

    def cross_checks(self, run: Any) -> list[str]:
        if getattr(getattr(run, "update", None), "parent", None) is None:
            return ["methods -> replay: replays the examples a parent run kept, and this run has no parent; update "
                    "a run with `transferkit update RUN --data NEW`"]
        return []


class Replay(Method):
    Config = ReplayConfig
    #: before augmentation: replayed examples are training examples like the others (augmented with them, and
    #: kept again by this run for its own updates)
    order = DATA - 1

    def __init__(self, cfg: ReplayConfig) -> None:
        super().__init__(cfg)
        self.parent: Path | None = None
        self.report: dict[str, Any] = {}

    def bind(self, run: Any) -> None:
        self.parent = Path(run.update.parent) if run is not None and run.update.parent else None

    def train_examples(self, examples: Any, *, seed: int) -> Any:
        from transferkit.continual.store import concat, read_sample
        from transferkit.data.split import stratified_sample

        assert self.parent is not None  # cross_checks
        kept = read_sample(self.parent, stratify=examples.stratify)
        size: int = self.cfg.size  # type: ignore[attr-defined]
        sample = stratified_sample(kept, size, seed) if size < len(kept) else kept
        self.report = {"replayed": len(sample), "kept_by_parent": len(kept), "new": len(examples)}
        log.info("replay: %d of the parent's %d kept examples mixed into %d new ones", len(sample), len(kept),
                 len(examples))
        return concat(examples, sample)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.report}
