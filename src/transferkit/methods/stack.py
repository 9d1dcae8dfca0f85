"""The enabled methods of a run, composed: each hook of each method in order. With no method enabled every
call is a no-op, and the loop skips the step chain altogether (no cost on the hot path)."""

from __future__ import annotations

from typing import Any

from transferkit.methods.base import Method, StepContext


def _overrides(m: Method, hook: str) -> bool:
    return getattr(type(m), hook) is not getattr(Method, hook)


class MethodStack:
    def __init__(self, methods: list[Method] | None = None) -> None:
        self.methods = list(methods or [])
        self._steps = [m for m in self.methods if _overrides(m, "train_step")]
        self._pre_step = [m for m in self.methods if _overrides(m, "before_optimizer_step")]
        self.has_loss = any(_overrides(m, "configure_loss") for m in self.methods)

    @classmethod
    def from_config(cls, configs: dict[str, Any], run: Any = None) -> MethodStack:
        """The run's methods; `run` (the whole config) is handed to each method's `bind` hook."""
        from transferkit import methods

        stack = cls(methods.build(configs))
        for m in stack.methods:
            m.bind(run)
        return stack

    def __bool__(self) -> bool:
        return bool(self.methods)

    @property
    def batch_multiple(self) -> int:
        """Chunks of a batch keep groups of this many consecutive examples together (contrastive pairs)."""
        return max((m.batch_multiple for m in self.methods), default=1)

    @property
    def has_step(self) -> bool:
        return bool(self._steps)

    def _fold(self, hook: str, value: Any, *args: Any, **kw: Any) -> Any:
        """Each method transforms what the previous one returned (data, model, parameter groups, export)."""
        for m in self.methods:
            value = getattr(m, hook)(*args, value, **kw) if args else getattr(m, hook)(value, **kw)
        return value

    def _each(self, hook: str, **kw: Any) -> None:
        for m in self.methods:
            getattr(m, hook)(**kw)

    def train_examples(self, examples: Any, *, seed: int) -> Any:
        return self._fold("train_examples", examples, seed=seed)

    def epoch_batches(self, batches: list[list[int]], *, epoch: int, seed: int, train: Any) -> list[list[int]]:
        return self._fold("epoch_batches", batches, epoch=epoch, seed=seed, train=train)

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        return self._fold("prepare_model", model, task=task)

    def param_groups(self, model: Any, groups: list[dict[str, Any]], *, lr: float) -> list[dict[str, Any]]:
        return self._fold("param_groups", groups, model, lr=lr)

    def configure_loss(self, spec: Any, *, class_counts: list[int], labels: list[str]) -> Any:
        return self._fold("configure_loss", spec, class_counts=class_counts, labels=labels)

    def train_step(self, ctx: StepContext, default: Any) -> Any:
        """The first method's train_step wraps the second's, ..., which wraps `default`."""
        chain = self._steps

        def call(i: int) -> Any:
            if i == len(chain):
                return default()
            return chain[i].train_step(ctx, lambda: call(i + 1))

        return call(0)

    @property
    def has_pre_step(self) -> bool:
        return bool(self._pre_step)

    def before_optimizer_step(self, **kw: Any) -> None:
        for m in self._pre_step:
            m.before_optimizer_step(**kw)

    # events
    def on_train_start(self, **kw: Any) -> None:
        self._each("on_train_start", **kw)

    def on_step_end(self, **kw: Any) -> None:
        self._each("on_step_end", **kw)

    def on_log(self, **kw: Any) -> None:
        self._each("on_log", **kw)

    def on_evaluation(self, **kw: Any) -> None:
        self._each("on_evaluation", **kw)

    def on_train_end(self, **kw: Any) -> None:
        self._each("on_train_end", **kw)

    def after_training(self, **kw: Any) -> None:
        self._each("after_training", **kw)

    def export(self, model: Any, *, run_dir: Any, forward: Any) -> Any:
        return self._fold("export", model, run_dir=run_dir, forward=forward)

    def state_dict(self) -> dict[str, Any]:
        return {m.name: m.state_dict() for m in self.methods}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m in self.methods:
            if m.name in state:
                m.load_state_dict(state[m.name])

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.methods]
