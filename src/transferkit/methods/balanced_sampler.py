"""A class-balanced sampler: each epoch draws as many training examples as the split holds, every class
equally likely (examples of rare classes repeat, of common ones are left out), cut into batches of the run's
size. The draw is a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import DATA, Method, MethodConfig
from transferkit.methods.losses import single_label_check


class BalancedSamplerConfig(MethodConfig):
    method: ClassVar[str] = "balanced_sampler"
    summary: ClassVar[str] = "draw each epoch's examples with every class equally likely (with replacement)"
    tasks: ClassVar[tuple[str, ...]] = ("text_classification", "relation_extraction")
    conflicts: ClassVar[tuple[str, ...]] = ("class_weights",)  # both correct the imbalance: it would count twice

    power: float = Field(1.0, ge=0.0, le=1.0, description="Sampling weight of an example is 1 / n_class^power: 1 "
                         "balances the classes fully, 0 is the natural distribution, 0.5 in between.")

    def cross_checks(self, run: Any) -> list[str]:
        problems = single_label_check(self.method, run)
        focal = run.methods.get("focal_loss")
        if focal is not None and focal.alpha != "none":
            problems.append("methods: balanced_sampler and focal_loss with alpha: inverse_frequency both correct the "
                            "class imbalance (it would count twice); set focal_loss.alpha: none or drop the sampler")
        return problems


def balanced_epoch(labels: list[int], batch_size: int, *, seed: int, epoch: int, power: float = 1.0) -> list[list[int]]:
    import numpy as np

    y = np.asarray(labels)
    counts = np.bincount(y)
    p = 1.0 / counts[y].astype(float) ** power
    rng = np.random.default_rng([seed, epoch, 0xBA1])
    draw = rng.choice(len(y), size=len(y), replace=True, p=p / p.sum())
    return [draw[i:i + batch_size].tolist() for i in range(0, len(draw), batch_size)]


class BalancedSampler(Method):
    Config = BalancedSamplerConfig
    order = DATA

    def epoch_batches(self, batches: list[list[int]], *, epoch: int, seed: int, train: Any) -> list[list[int]]:
        size = max(len(b) for b in batches) if batches else 1
        labels = [int(f["labels"]) for f in train.features]
        return balanced_epoch(labels, size, seed=seed, epoch=epoch, power=float(self.cfg.power))  # type: ignore[attr-defined]
