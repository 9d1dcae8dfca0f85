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

    @classmethod
    def from_config(cls, configs: dict[str, Any]) -> MethodStack:
        from transferkit import methods

        return cls(methods.build(configs))

    def __bool__(self) -> bool:
        return bool(self.methods)

    @property
    def has_step(self) -> bool:
        return bool(self._steps)

    def add(self, method: Method) -> None:
        self.methods = sorted([*self.methods, method], key=lambda m: (m.order, m.name))
        self._steps = [m for m in self.methods if _overrides(m, "train_step")]

    # data, model, optimisation: each method transforms what the previous one returned
    def train_examples(self, examples: Any, *, seed: int) -> Any:
        for m in self.methods:
            examples = m.train_examples(examples, seed=seed)
        return examples

    def epoch_batches(self, batches: list[list[int]], *, epoch: int, seed: int, train: Any) -> list[list[int]]:
        for m in self.methods:
            batches = m.epoch_batches(batches, epoch=epoch, seed=seed, train=train)
        return batches

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        for m in self.methods:
            model = m.prepare_model(model, task=task)
        return model

    def param_groups(self, model: Any, groups: list[dict[str, Any]], *, lr: float) -> list[dict[str, Any]]:
        for m in self.methods:
            groups = m.param_groups(model, groups, lr=lr)
        return groups

    def train_step(self, ctx: StepContext, default: Any) -> Any:
        """The first method's train_step wraps the second's, ..., which wraps `default`."""
        chain = self._steps

        def call(i: int) -> Any:
            if i == len(chain):
                return default()
            return chain[i].train_step(ctx, lambda: call(i + 1))

        return call(0)

    # events
    def on_train_start(self, **kw: Any) -> None:
        for m in self.methods:
            m.on_train_start(**kw)

    def on_step_end(self, **kw: Any) -> None:
        for m in self.methods:
            m.on_step_end(**kw)

    def on_log(self, **kw: Any) -> None:
        for m in self.methods:
            m.on_log(**kw)

    def on_evaluation(self, **kw: Any) -> None:
        for m in self.methods:
            m.on_evaluation(**kw)

    def on_train_end(self, **kw: Any) -> None:
        for m in self.methods:
            m.on_train_end(**kw)

    def export(self, model: Any, *, run_dir: Any, forward: Any) -> Any:
        for m in self.methods:
            model = m.export(model, run_dir=run_dir, forward=forward)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {m.name: m.state_dict() for m in self.methods}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m in self.methods:
            if m.name in state:
                m.load_state_dict(state[m.name])

    def describe(self) -> list[dict[str, Any]]:
        return [m.describe() for m in self.methods]
