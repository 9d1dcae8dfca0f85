"""Early stopping on a validation metric, with state that survives a checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    metric: str
    mode: str = "max"
    patience: int = 3
    min_delta: float = 0.0
    enabled: bool = True
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record an evaluation; True when it is the best so far (the best checkpoint should be saved)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self.bad_evals += 1
            return False
        better = (self.best is None or
                  (value > self.best + self.min_delta if self.mode == "max" else value < self.best - self.min_delta))
        if better:
            self.best, self.best_step, self.bad_evals = float(value), step, 0
        else:
            self.bad_evals += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, v)
