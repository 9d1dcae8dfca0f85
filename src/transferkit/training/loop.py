"""The one training loop. Every task and method goes through `fit()`.

On accelerate: `accelerate launch --num_processes N` runs it as DDP (gloo on CPU, NCCL on GPUs) with no
code change. Batches are built here (length-grouped, token-budgeted, sharded per process) so that the
order of every epoch is a pure function of (seed, epoch): that is what makes a resumed run identical to
an uninterrupted one. No host sync (`.item()`) on the hot path except at logging steps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.config import EarlyStoppingConfig, TrainConfig, minimized
from transferkit.errors import CheckpointError, ConfigError, Interrupted
from transferkit.evaluation.evaluate import evaluate
from transferkit.methods.base import StepContext
from transferkit.methods.stack import MethodStack
from transferkit.tasks.base import Encoded, Task
from transferkit.training import checkpoint as ckpt
from transferkit.training.batching import chunk_batch, epoch_batches, split_batch
from transferkit.training.early_stop import EarlyStopping
from transferkit.training.logger import MetricsLogger
from transferkit.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best_model.pt"


@dataclass
class LoopState:
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps taken
    examples_seen: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    # training loss summed since the last log line, so a resumed run logs the same means
    loss_sum: float = 0.0
    loss_count: int = 0


@dataclass
class FitResult:
    steps: int
    epochs_completed: float
    stopped_early: bool
    best_metric: float | None
    best_step: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    examples_seen: int = 0
    tokens_seen: int = 0


def resolve_precision(precision: str, device_type: str) -> str:
    """accelerate's mixed_precision value. bf16 only where the hardware has it (it is ~16x slower on AVX2 CPUs)."""
    if precision == "fp32":
        return "no"
    if precision == "auto":
        if device_type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"
    return precision


def make_accelerator(precision: str = "auto"):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    mixed = resolve_precision(precision, "cuda" if cuda else "cpu")
    if cuda and mixed in ("bf16", "fp16"):
        # Measured on an H200 (bench/results/gpu_check.md): with cuDNN's attention kernel, bf16 training on
        # length-grouped batches (a new shape every batch) ran at 164-176 samples/s against 1,409 in fp32;
        # with it disabled, 1,344. SDPA then uses the flash / memory-efficient kernels.
        torch.backends.cuda.enable_cudnn_sdp(False)
    return Accelerator(cpu=not cuda, mixed_precision=mixed)


def _micro_batch_size(cfg: TrainConfig, world: int) -> int:
    return max(1, cfg.batch_size // (world * cfg.grad_accum))


def fit(task: Task, model: nn.Module, train: Encoded, val: Encoded, cfg: TrainConfig,
        early: EarlyStoppingConfig, run_dir: Path, *, accelerator: Any = None, resume: bool = False,
        progress: bool = True, label: str = "training", methods: MethodStack | None = None,
        tensorboard: bool = True, checkpoints: bool = True) -> FitResult:
    """Train `model` on `train`, evaluating on `val`. Checkpoints go to run_dir/checkpoints.

    The best model (by the early-stopping metric) is kept in run_dir/checkpoints/best_model.pt and loaded
    back into `model` before returning. `methods`: the run's plug-ins (their hooks are called here).
    `checkpoints=False` (sweeps of many short runs that keep only metrics): nothing is written for --resume
    and the best weights are kept in memory.
    """
    methods = methods if methods is not None else MethodStack()
    acc = accelerator or make_accelerator(cfg.precision)
    ckpt_dir = run_dir / "checkpoints"
    main = acc.is_main_process
    world, rank = acc.num_processes, acc.process_index
    micro = _micro_batch_size(cfg, world)
    bm = cfg.batching

    def batches_for(epoch: int) -> list[list[int]]:
        # Global micro-batches (the same whatever the number of processes), split between processes.
        budget = bm.max_tokens * world if bm.max_tokens else None
        all_batches = epoch_batches(train.lengths, micro * world, seed=cfg.seed, epoch=epoch,
                                    strategy=bm.strategy, max_tokens=budget)
        all_batches = methods.epoch_batches(all_batches, epoch=epoch, seed=cfg.seed, train=train)
        return [split_batch(b, rank, world) for b in all_batches]

    steps_per_epoch = math.ceil(len(batches_for(0)) / cfg.grad_accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    log.info("%d process(es) (%s), %d examples per micro-batch, %d optimizer steps (%d per epoch)",
             world, acc.distributed_type.value, micro, total_steps, steps_per_epoch)
    eval_every = steps_per_epoch if cfg.eval_every == "epoch" else int(cfg.eval_every)

    loss_fn = _loss_function(task, train, methods)
    optimizer = build_optimizer(model, cfg.optimizer, acc.device.type, groups_hook=methods.param_groups)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps)
    watch = early.metric or task.primary_metric
    mode = early.mode or ("min" if minimized(watch) else "max")
    stopper = EarlyStopping(metric=watch, mode=mode, patience=early.patience,
                            min_delta=early.min_delta, enabled=early.enabled)
    state = LoopState()
    metrics_offset = None
    if main and ckpt_dir.exists():
        ckpt.remove_stale_temporaries(ckpt_dir)
    if resume and (ckpt_dir / LAST).exists():
        saved = _load_last(ckpt_dir)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        stopper.load_state_dict(saved["early_stopping"])
        methods.load_state_dict(saved.get("methods", {}))
        state = LoopState(**saved["loop"])
        metrics_offset = saved["metrics_offset"]
        ckpt.set_rng_state(saved["rng"][rank] if isinstance(saved["rng"], list) else saved["rng"])
        log.info("resumed from step %d (epoch %d, batch %d)", state.step, state.epoch, state.batch_in_epoch)
    elif resume:
        log.warning("--resume: no checkpoint in %s, starting from the beginning", ckpt_dir)

    model, optimizer = acc.prepare(model, optimizer)
    logger = MetricsLogger(run_dir, enabled=main, resume_offset=metrics_offset,
                           purge_step=state.step if metrics_offset is not None else None, tensorboard=tensorboard)

    best_in_memory: dict[str, torch.Tensor] | None = None

    def save_last(end_of_epoch: bool) -> None:
        if not checkpoints:
            return
        loop_state = {**vars(state), "loss_sum": float(running), "loss_count": running_n}
        if end_of_epoch:  # resume at the start of the next epoch
            loop_state.update(epoch=state.epoch + 1, batch_in_epoch=0)
        rngs = ckpt.rng_state()
        if world > 1:
            from accelerate.utils import gather_object

            rngs = gather_object([rngs])
        if main:
            ckpt.atomic_save({
                "model": acc.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "early_stopping": stopper.state_dict(),
                "loop": loop_state, "rng": rngs, "metrics_offset": logger.offset(),
                "methods": methods.state_dict(),
            }, ckpt_dir / LAST)
        acc.wait_for_everyone()

    def run_eval() -> bool:
        # The unwrapped module: DDP's forward hooks would expect every process to run the same number
        # of forward passes, which disjoint evaluation shares do not.
        metrics, _ = evaluate(task, acc.unwrap_model(model), val, device=acc.device, accelerator=acc,
                              batch_size=max(32, micro * 2), validation=True)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        scalars["epoch"] = round(state.step / steps_per_epoch, 3)
        logger.log(state.step, scalars, "validation")
        methods.on_evaluation(step=state.step, metrics=scalars)
        watched = scalars.get(stopper.metric)
        if watched is None:
            raise ConfigError([f"early_stopping -> metric: '{stopper.metric}' is not among the validation "
                               f"metrics {sorted(scalars)}"])
        if stopper.update(watched, state.step):
            nonlocal best_in_memory
            weights = acc.unwrap_model(model).state_dict()
            if not checkpoints:  # every process keeps its copy: they load it back at the end
                best_in_memory = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
            elif main:
                ckpt.atomic_save(weights, ckpt_dir / BEST)
        acc.wait_for_everyone()
        log.info("step %d: validation %s", state.step,
                 ", ".join(f"{k}={v:.4f}" for k, v in scalars.items() if k != "epoch"))
        return stopper.should_stop

    methods.on_train_start(model=model, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    model.train()
    stopped = stopper.should_stop
    running = torch.full((), state.loss_sum, device=acc.device)
    running_n = state.loss_count
    bar = _progress(total_steps, main and progress)
    bar_task = bar.add_task(label, total=total_steps, completed=state.step, loss=float("nan"))
    t0 = time.perf_counter()
    stop = StopRequest(enabled=world == 1)
    with bar, stop, logger:
        while state.step < total_steps and not stopped:
            batches = batches_for(state.epoch)
            n_micro = len(batches)
            while state.batch_in_epoch < n_micro and state.step < total_steps:
                group_end = min(n_micro, (state.batch_in_epoch // cfg.grad_accum + 1) * cfg.grad_accum)
                group = range(state.batch_in_epoch, group_end)
                for j in group:
                    idx = batches[j]
                    chunks = chunk_batch(idx, train.lengths, bm.chunk_tokens, multiple=methods.batch_multiple)
                    for c, part in enumerate(chunks):
                        batch = task.collate([train.features[i] for i in part])
                        batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
                        sync = j == group_end - 1 and c == len(chunks) - 1
                        ctx = acc.no_sync(model) if not sync and world > 1 else contextlib.nullcontext()
                        scale = len(part) / len(idx)
                        if methods.has_step:
                            loss = _method_step(methods, task, loss_fn, model, batch, scale, len(group), acc, ctx,
                                                state.step, world)
                        else:
                            with ctx, acc.autocast():
                                loss = loss_fn(task.forward(model, batch), batch) * scale
                            acc.backward(loss / len(group))
                        running += loss.detach()
                    running_n += 1
                    state.examples_seen += len(idx) * world
                    state.tokens_seen += sum(train.lengths[i] for i in idx) * world
                if methods.has_pre_step:
                    methods.before_optimizer_step(model=model)
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                state.step += 1
                state.batch_in_epoch = group_end
                methods.on_step_end(step=state.step, model=model, optimizer=optimizer)  # gradients still there
                optimizer.zero_grad(set_to_none=True)
                if state.step % cfg.log_every == 0 or state.step == total_steps:
                    mean_loss = float(running) / max(running_n, 1)
                    running.zero_()
                    running_n = 0
                    values = {"loss": mean_loss, "lr": scheduler.get_last_lr()[0],
                              "epoch": round(state.step / steps_per_epoch, 3)}
                    logger.log(state.step, values, "train")
                    methods.on_log(step=state.step, values=values)
                    bar.update(bar_task, loss=mean_loss)
                bar.update(bar_task, completed=state.step)
                end_of_epoch = state.batch_in_epoch >= n_micro
                if state.step % eval_every == 0 or state.step == total_steps or (
                        end_of_epoch and cfg.eval_every == "epoch"):
                    state.train_seconds += time.perf_counter() - t0
                    stopped = run_eval()
                    save_last(end_of_epoch)
                    t0 = time.perf_counter()
                    if stopped:
                        log.info("early stopping at step %d: no %s improvement in %d evaluations (best %.4f "
                                 "at step %s)", state.step, stopper.metric, stopper.patience, stopper.best,
                                 stopper.best_step)
                        break
                elif state.step % cfg.checkpoint_every == 0 or stop.requested:
                    state.train_seconds += time.perf_counter() - t0
                    save_last(end_of_epoch)
                    t0 = time.perf_counter()
                if stop.requested and not checkpoints:
                    raise Interrupted(f"{stop.requested}: stopped after step {state.step} of {total_steps}; this "
                                      "run keeps no checkpoints (output.keep: metrics): run it again")
                if stop.requested:
                    raise Interrupted(
                        f"{stop.requested}: stopped after step {state.step} of {total_steps} and saved a checkpoint "
                        f"({ckpt_dir / LAST}). Continue with the same command and --resume.")
            if state.batch_in_epoch >= n_micro:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    state.train_seconds += time.perf_counter() - t0
    logger.close()
    if best_in_memory is not None:
        acc.unwrap_model(model).load_state_dict(best_in_memory)
    elif checkpoints and (ckpt_dir / BEST).exists():
        try:
            best = ckpt.load(ckpt_dir / BEST)
        except CheckpointError as e:
            raise CheckpointError(e.path, e.reason, "It holds the weights of the best validation step; "
                                  "rerun with --overwrite to train again.") from None
        acc.unwrap_model(model).load_state_dict(best)
    acc.wait_for_everyone()
    result = FitResult(steps=state.step, epochs_completed=round(state.step / steps_per_epoch, 3),
                     stopped_early=stopped, best_metric=stopper.best, best_step=stopper.best_step,
                     history=logger.history, train_seconds=state.train_seconds,
                     examples_seen=state.examples_seen, tokens_seen=state.tokens_seen)
    methods.on_train_end(model=acc.unwrap_model(model), result=result)
    return result


def _loss_function(task: Task, train: Encoded, methods: MethodStack) -> Any:
    """The task's loss, or, when a method configures it (class weights, focal loss, label smoothing), the
    shared class-logit loss with the settings the methods chose from the training split's class counts."""
    if not methods.has_loss:
        return task.loss
    from transferkit.methods.losses import LossSpec, class_counts, spec_loss

    labels = list(task.labels)  # type: ignore[attr-defined]
    spec = methods.configure_loss(LossSpec(), class_counts=class_counts(train.features, len(labels)), labels=labels)
    log.info("loss: %s", spec.describe())
    return lambda outputs, batch: spec_loss(outputs, batch["labels"], spec)


def _method_step(methods: MethodStack, task: Task, loss_fn: Any, model: nn.Module, batch: dict[str, torch.Tensor],
                 scale: float, n_group: int, acc: Any, sync_ctx: Any, step: int, world: int = 1) -> torch.Tensor:
    """One chunk's forward and backward through the methods' train_step chain."""
    def forward_loss() -> torch.Tensor:
        with acc.autocast():
            return loss_fn(task.forward(model, batch), batch) * scale

    def backward(loss: torch.Tensor) -> None:
        acc.backward(loss / n_group)

    def default() -> torch.Tensor:
        with sync_ctx:
            loss = forward_loss()
        backward(loss)
        return loss

    no_sync = (lambda: acc.no_sync(model)) if world > 1 else contextlib.nullcontext
    return methods.train_step(StepContext(model, batch, forward_loss, backward, step, scale, no_sync), default)


def _load_last(ckpt_dir: Path) -> dict[str, Any]:
    """The resumable checkpoint; a damaged one is named with what is still intact and what to do."""
    try:
        return ckpt.load(ckpt_dir / LAST)
    except CheckpointError as e:
        raise CheckpointError(e.path, e.reason, ckpt.damaged_last_advice(ckpt_dir, e.path)) from None


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM during training: finish the current step, save a checkpoint, stop with a
    message. A second Ctrl-C stops at once. Only in a single process, on the main thread (under DDP every
    process would have to agree on the step, so the default handling stays)."""

    def __init__(self, enabled: bool = True) -> None:
        import threading

        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.requested:
            raise KeyboardInterrupt
        self.requested = "interrupted (Ctrl-C)" if signum == signal.SIGINT else "terminated (SIGTERM)"
        log.warning("%s: stopping after this step and saving a checkpoint (Ctrl-C again stops at once, "
                    "losing the steps since the last checkpoint)", self.requested)

    def __enter__(self) -> StopRequest:
        import signal

        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def _progress(total: int, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), disable=not enabled)
