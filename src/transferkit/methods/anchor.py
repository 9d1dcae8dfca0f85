"""Pull the weights toward where training started, against forgetting: L2-SP (Li et al. 2018) adds
alpha * (w - w0) to every gradient; EWC (Kirkpatrick et al. 2017) weights that pull by the diagonal Fisher
information of the parent's task, estimated on the examples the parent run kept (replay.jsonl).

w0 is the model as built, before training: in `transferkit update` the parent run's weights, in a plain
fine-tuning run the pretrained checkpoint's (the original L2-SP). Rows that a class-incremental update added to
the head (new labels) have nothing to be pulled toward and are left free. The penalty's gradient goes into the
gradients once per optimizer step, after the backward passes and before clipping (the `before_optimizer_step`
hook): no extra forward pass, one multiply-add per parameter tensor."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import MODEL, Method, MethodConfig
from transferkit.methods.peft_common import PEFT_METHODS
from transferkit.modeling.grow import GROWN_ROWS

log = logging.getLogger(__name__)



def _fp16_problem(name: str, run: Any) -> list[str]:
    if getattr(getattr(run, "train", None), "precision", None) == "fp16":
        return [f"methods -> {name}: adds its penalty to the gradients directly, which fp16's loss scaling would "
                "scale wrongly; use train.precision: bf16 or fp32"]
    return []


class L2SPConfig(MethodConfig):
    method: ClassVar[str] = "l2sp"
    summary: ClassVar[str] = "pull the weights toward the starting point (the parent run in an update): L2-SP"
    conflicts: ClassVar[tuple[str, ...]] = (*PEFT_METHODS, "ewc")

    strength: float = Field(0.01, gt=0.0, description="alpha of the penalty (alpha/2) * ||w - w0||^2, w0 the "
                            "weights training starts from; its gradient alpha * (w - w0) is added every step.")

    def cross_checks(self, run: Any) -> list[str]:
        return _fp16_problem("l2sp", run)


class EWCConfig(MethodConfig):
    method: ClassVar[str] = "ewc"
    summary: ClassVar[str] = ("elastic weight consolidation: the pull toward the parent's weights weighted by "
                              "the Fisher information of its task (continual updates)")
    conflicts: ClassVar[tuple[str, ...]] = (*PEFT_METHODS, "l2sp")

    strength: float = Field(1.0, gt=0.0, description="lambda of the penalty (lambda/2) * sum F (w - w0)^2. F is "
                            "scaled to mean 1 over the anchored weights, so a strength means about what the same "
                            "l2sp strength means.")
    fisher_examples: int = Field(256, ge=1, description="The parent's kept examples the diagonal Fisher is "
                                 "estimated on (one backward pass each).")

    def cross_checks(self, run: Any) -> list[str]:
        problems = _fp16_problem("ewc", run)
        if getattr(getattr(run, "update", None), "parent", None) is None:
            problems.append("methods -> ewc: estimates the Fisher information on the parent run's kept examples, "
                            "and this run has no parent; update a run with `transferkit update RUN --data NEW`, "
                            "or use methods.l2sp (a pull toward the starting weights)")
        return problems


class Anchor(Method):
    """Shared by L2-SP and EWC: the anchored parameters, their starting values and the weight of each pull."""

    order = MODEL

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.parent: Path | None = None
        self._params: list[Any] = []
        self._anchors: list[Any] = []
        self._weights: list[Any] = []  # a float (uniform pull) or a tensor of the parameter's shape
        self.report: dict[str, Any] = {}

    def bind(self, run: Any) -> None:
        parent = getattr(getattr(run, "update", None), "parent", None)
        self.parent = Path(parent) if parent else None

    def importance(self, model: Any, named: list[tuple[str, Any]], *, task: Any) -> list[Any]:
        """Per-parameter weights before the strength (1.0: uniform)."""
        return [1.0] * len(named)

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        import torch

        # every parameter, also those frozen now (gradual unfreezing and head warm-up thaw them later); a frozen one
        # has no gradient and is skipped at each step
        named = list(model.named_parameters())
        grown: dict[str, list[int]] = getattr(model, GROWN_ROWS, {}) or {}
        weights = self.importance(model, named, task=task)
        strength = float(self.cfg.strength)  # type: ignore[attr-defined]
        self._params, self._anchors, self._weights = [], [], []
        for (name, p), w in zip(named, weights):
            if name in grown:  # the new labels' rows: free
                mask = torch.ones_like(p)
                mask[grown[name]] = 0.0
                w = mask * w
            self._params.append(p)
            self._anchors.append(p.detach().clone())
            self._weights.append(w * strength if isinstance(w, torch.Tensor) else float(w) * strength)
        log.info("%s: %d parameter tensors pulled toward the %s weights (strength %g)", self.name, len(self._params),
                 "parent run's" if self.parent else "starting", strength)
        return model

    def on_train_start(self, *, model: Any, total_steps: int, steps_per_epoch: int) -> None:
        """The model may have moved to its device after prepare_model: the anchors follow, once."""
        import torch

        self._anchors = [a.to(p.device) for p, a in zip(self._params, self._anchors)]
        self._weights = [w.to(p.device) if isinstance(w, torch.Tensor) else w for p, w in zip(self._params, self._weights)]

    def before_optimizer_step(self, *, model: Any) -> None:
        import torch

        with torch.no_grad():
            for p, a, w in zip(self._params, self._anchors, self._weights):
                if p.grad is not None:
                    p.grad.add_((p.detach() - a).mul_(w))

    def penalty(self) -> float:
        """(1/2) sum w (p - a)^2 with the current weights: zero at the starting point."""
        import torch

        total = 0.0
        with torch.no_grad():
            for p, a, w in zip(self._params, self._anchors, self._weights):
                d = p.detach() - a.to(p.device)
                total += 0.5 * float((d * d * (w if isinstance(w, float) else w.to(p.device))).sum())
        return total

    def on_train_end(self, *, model: Any, result: Any) -> None:
        import torch

        with torch.no_grad():
            dist = sum(float(((p.detach() - a.to(p.device)) ** 2).sum()) for p, a in zip(self._params, self._anchors))
        self.report.update(penalty_at_end=round(self.penalty(), 6), distance_at_end=round(dist ** 0.5, 6))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.report}


class L2SP(Anchor):
    Config = L2SPConfig


class EWC(Anchor):
    Config = EWCConfig

    def importance(self, model: Any, named: list[tuple[str, Any]], *, task: Any) -> list[Any]:
        """The diagonal empirical Fisher: the mean over the parent's kept examples of each squared gradient of
        the task loss (one example at a time, dropout off), scaled to mean 1."""
        import torch

        from transferkit.continual.store import read_sample
        from transferkit.modeling.load import load_tokenizer

        assert self.parent is not None  # cross_checks
        cfg: EWCConfig = self.cfg  # type: ignore[assignment]
        kept = read_sample(self.parent)
        kept = kept.subset(list(range(min(cfg.fisher_examples, len(kept)))))
        task.check(kept)
        enc = task.encode(load_tokenizer(str(self.parent / "model")), kept)
        params = [p for _, p in named]
        fisher = [torch.zeros_like(p) for p in params]
        was_training = model.training
        frozen = [p for p in params if not p.requires_grad]  # thawed later (gradual unfreezing): their Fisher too
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
        device = params[0].device if params else torch.device("cpu")
        for f in enc.features:
            batch = {k: v.to(device) for k, v in task.collate([f]).items()}
            loss = task.loss(task.forward(model, batch), batch)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, g in zip(fisher, grads):
                if g is not None:
                    acc.add_(g.detach() ** 2)
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)
        n = max(len(enc), 1)
        total = sum(float(f.sum()) for f in fisher) / n
        count = sum(f.numel() for f in fisher)
        mean = total / max(count, 1)
        if mean <= 0:
            raise ValueError("ewc: the Fisher information is zero on every weight (the parent's loss has no "
                             "gradient on its kept examples); use methods.l2sp instead")
        self.report.update(fisher_examples=len(enc), fisher_mean_raw=mean)
        log.info("ewc: Fisher information from %d kept examples of %s", len(enc), self.parent)
        return [f / n / mean for f in fisher]
