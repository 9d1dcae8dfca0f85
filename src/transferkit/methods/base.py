"""The methods seam: a method is a small component that plugs into the one training loop through hooks.

Each method lives in its own file under `methods/` with its config section (a pydantic model, every field
described) beside it; a run lists the methods it uses under `methods:`. The loop and the recipes call the
hooks of every enabled method, in the stated order (`Method.order`: data, model, optimisation, step,
events), so several methods compose without the loop knowing any of them.

This module is imported by `config.py`, so it must not import torch at module level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

#: composition order of the stages (lower runs first); a method states its stage
DATA, MODEL, OPTIM, STEP, EVENTS = 10, 20, 30, 40, 50


class MethodConfig(BaseModel):
    """A method's config section: unknown keys are errors, assignments validated, every field described."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: registry name (the key under `methods:`)
    method: ClassVar[str] = ""
    #: one line for `config explain` and the docs
    summary: ClassVar[str] = ""
    #: methods that cannot be combined with this one (a config error, before anything is written)
    conflicts: ClassVar[tuple[str, ...]] = ()
    #: task types this method supports (empty: all)
    tasks: ClassVar[tuple[str, ...]] = ()
    #: False for methods that only observe (trackers, progress hooks): they may be added or removed on --resume
    affects_results: ClassVar[bool] = True

    def cross_checks(self, run: Any) -> list[str]:
        """Problems with this section given the whole run config (locations 'methods -> name -> field')."""
        return []


class StepContext:
    """What a training-step hook sees: the model, the batch of this chunk, and the two calls that make a
    step (the loss of a forward pass, and its backward pass with the loop's scaling). `scale` is this chunk's
    share of its micro-batch (1.0 unless the batch is split into chunks): a loss term a method adds once per
    micro-batch is multiplied by it, as `forward_loss()` already is."""

    __slots__ = ("model", "batch", "forward_loss", "backward", "step", "scale", "no_sync")

    def __init__(self, model: nn.Module, batch: dict[str, torch.Tensor], forward_loss: Any, backward: Any,
                 step: int, scale: float = 1.0, no_sync: Any = None) -> None:
        import contextlib

        self.model, self.batch, self.forward_loss, self.backward, self.step = model, batch, forward_loss, backward, step
        self.scale = scale
        #: a context for passes whose gradients must not be all-reduced under DDP (a no-op in one process)
        self.no_sync = no_sync or contextlib.nullcontext


class Method:
    """Base class: every hook is optional and does nothing by default. Subclasses set `Config` and `order`."""

    Config: ClassVar[type[MethodConfig]]
    order: ClassVar[int] = EVENTS
    #: a batch is made of groups of this many consecutive examples (pairs: 2) that a chunk never splits
    batch_multiple: ClassVar[int] = 1

    def __init__(self, cfg: MethodConfig) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return self.Config.method

    def bind(self, run: Any) -> None:
        """The whole run config, before any other hook (a method that needs more than its own section: the
        parent run of an update)."""

    # -- data (training split only; validation and test are never touched)
    def train_examples(self, examples: Any, *, seed: int) -> Any:
        """The training Examples before they are encoded (augmentation). Returns Examples."""
        return examples

    def epoch_batches(self, batches: list[list[int]], *, epoch: int, seed: int, train: Any) -> list[list[int]]:
        """The global micro-batches of one epoch (a sampler). Must be a pure function of (seed, epoch) so that
        resume stays exact."""
        return batches

    # -- model
    def prepare_model(self, model: nn.Module, *, task: Any) -> nn.Module:
        """The model after it is built and frozen, before training (adapters, later pruning)."""
        return model

    # -- optimisation
    def param_groups(self, model: nn.Module, groups: list[dict[str, Any]], *, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (layer-wise learning rates)."""
        return groups

    def configure_loss(self, spec: Any, *, class_counts: list[int], labels: list[str]) -> Any:
        """The class-logit loss's settings (a methods.losses.LossSpec: class weights, focal gamma, label
        smoothing), given the training split's class counts. A method that overrides this makes the loop train
        with methods.losses.spec_loss instead of the task's own loss."""
        return spec

    # -- training step
    def train_step(self, ctx: StepContext, inner: Any) -> torch.Tensor:
        """One chunk's forward + backward. `inner()` runs the rest of the chain (by default: loss of a
        forward pass, then its backward) and returns the loss; a method may add passes around it
        (adversarial perturbations) or replace the loss. Returns the loss to log."""
        return inner()

    def before_optimizer_step(self, *, model: nn.Module) -> None:
        """Once per optimizer step, after every backward pass of the step (gradients complete, all-reduced under
        DDP) and before clipping: a penalty added to the gradients directly (L2-SP, EWC)."""

    # -- events
    def on_train_start(self, *, model: nn.Module, total_steps: int, steps_per_epoch: int) -> None:
        """Before the first step (also after a resume)."""

    def on_step_end(self, *, step: int, model: nn.Module, optimizer: Any) -> None:
        """After each optimizer step, before its gradients are cleared (gradual unfreezing, budget schedules)."""

    def on_log(self, *, step: int, values: dict[str, Any]) -> None:
        """After each training log line (trackers)."""

    def on_evaluation(self, *, step: int, metrics: dict[str, Any]) -> None:
        """After each validation (trackers, hyperparameter-search pruning)."""

    def on_train_end(self, *, model: nn.Module, result: Any) -> None:
        """After training, the best checkpoint restored."""

    def after_training(self, *, model: nn.Module, task: Any, val: Any, infer: Any, train: Any = None) -> None:
        """After training (best checkpoint restored), before the test split is scored: decision rules fitted on
        the validation split (threshold tuning), a head fitted on the training split (`train`, encoded; the
        contrastive method). `infer(model, encoded)` gives the scores of a split."""

    # -- saving
    def export(self, model: nn.Module, *, run_dir: Any, forward: Any) -> nn.Module:
        """The model to save as the run's model/ folder. A method may write its own files into the run
        folder (the LoRA adapter) and return another model (the merged one). `forward(model)` gives the
        outputs of a fixed validation batch, for checking that the two agree."""
        return model

    # -- resumable state
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """What the report says about this method."""
        return {"method": self.name, **self.cfg.model_dump(mode="json")}
