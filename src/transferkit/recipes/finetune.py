"""finetune: config -> checked data -> baselines -> fit -> test -> model folder + report.

Everything that can be wrong with the user's input is checked before the run folder is created, so a bad
config or bad data never leaves a half-written run behind. Once training starts, checkpoints make the run
resumable (`--resume`).
"""

from __future__ import annotations

import json
import logging
import resource
from pathlib import Path
from typing import Any

from transferkit.config import RunConfig
from transferkit.data.prepare import load_splits
from transferkit.methods.stack import MethodStack
from transferkit.modeling import load as mload
from transferkit.recipes import rundir
from transferkit.recipes.rundir import RunFolder, fingerprint
from transferkit.tasks import build_task

from transferkit.allocator import current as allocator  # noqa: E402

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def open_run(cfg: Any, folder: RunFolder, acc: Any) -> None:
    """The main process creates (or, with --overwrite, replaces) the checked run folder and writes its
    marker and resolved config; the others wait (finetune and pretrain alike)."""
    if acc.is_main_process:
        folder.create(cfg)
    acc.wait_for_everyone()


def encoder_of(model: Any) -> Any:
    """The transformers encoder inside a task model (also when a method wrapped it, e.g. peft)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model


def data_fingerprint(splits: Any) -> str:
    return fingerprint((ex.name, t, p, str(y)) for ex in splits
                       for t, p, y in zip(ex.texts, ex.text_pairs or [None] * len(ex), ex.labels))


def _build_model(cfg: RunConfig, task, ref: str, tokenizer, init: str, methods: MethodStack):
    from transformers import set_seed

    from transferkit.modeling.freeze import apply_freeze, count_params

    set_seed(cfg.train.seed)
    model = task.build_model(ref, init=init, size=cfg.model.size if init == "scratch" else None,
                             dropout=cfg.model.dropout, tokenizer=tokenizer)
    trainable, total = apply_freeze(model, cfg.freeze.mode, cfg.freeze.layers)
    if methods:
        model = methods.prepare_model(model, task=task)
        trainable, total = count_params(model)
    log.info("parameters trained: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    return model, trainable, total


def run(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
        observers: list[Any] | None = None) -> dict[str, Any]:
    """`observers`: Method instances that only watch the loop's events (a hyperparameter search's pruning); they
    are not part of the config, the data fingerprint or the saved run."""
    # 1. Everything the user gave is checked before anything is written.
    folder = rundir.plan(cfg, cfg.run_dir, "finetune", resume=resume, overwrite=overwrite)
    ref = mload.resolve(cfg.model.path)
    mload.check_checkpoint(ref, init=cfg.model.init, max_length=cfg.model.max_length, size=cfg.model.size)
    tokenizer = mload.load_tokenizer(ref)
    task = build_task(cfg)
    splits = load_splits(cfg.data, getattr(task, "read", None))
    task.fit_labels(splits.train)
    task.check(splits.validation)
    task.check(splits.test)
    # the methods see the training split first (augmentation, before it is encoded); the fingerprint that
    # --resume compares covers what is trained on, so a changed synonym table or MLM is noticed
    methods = MethodStack.from_config(cfg.methods, run=cfg)
    splits.train = methods.train_examples(splits.train, seed=cfg.train.seed)
    from transferkit.tracking import observers as trackers

    observers = [*(observers or []), *trackers(cfg, cfg.run_dir)]
    if observers:
        methods = MethodStack([*methods.methods, *observers])
    folder.check_data(data_fingerprint(splits))
    run_dir = folder.path

    from transferkit.training.loop import make_accelerator

    acc = make_accelerator(cfg.train.precision)
    main = acc.is_main_process
    log.info("data: %s", splits.report.sizes)

    # 2. Tokenize once; build the model (head options, freeze policy and the methods' model changes are
    # checked here, still before the run folder exists).
    train, val, test = (task.encode(tokenizer, s) for s in splits)
    model, trainable, total = _build_model(cfg, task, ref, tokenizer, cfg.model.init, methods)
    rundir.check_free_space(run_dir, model, extra_runs=1 + cfg.compare.scratch)
    open_run(cfg, folder, acc)
    with folder.guard(main):
        return _train_and_ship(cfg, task, model, tokenizer, ref, splits, (train, val, test), acc, run_dir,
                               resume=resume, progress=progress, trainable=trainable, total=total,
                               methods=methods)


def _train_and_ship(cfg: RunConfig, task: Any, model: Any, tokenizer: Any, ref: str, splits: Any, encoded: tuple,
                    acc: Any, run_dir: Path, *, resume: bool, progress: bool, trainable: int,
                    total: int, methods: MethodStack) -> dict[str, Any]:
    from transferkit.deploy.predictor import save_model
    from transferkit.evaluation.compare import linear_probe, majority_baseline
    from transferkit.evaluation.evaluate import evaluate, infer, predictions
    from transferkit.evaluation.report import transfer_metrics, write_report
    from transferkit.training.checkpoint import atomic_write_text
    from transferkit.training.loop import fit

    main = acc.is_main_process
    train, val, test = encoded
    # 3. Baselines before fine-tuning (deterministic; cached so --resume does not redo them).
    transfer: dict[str, dict[str, Any]] = {}
    base_path = run_dir / "baselines.json"
    if main:
        if resume and base_path.exists():
            transfer = json.loads(base_path.read_text())
        else:
            # the task says which baselines it can run (majority and linear probe need one label per example)
            baselines = task.baselines
            if cfg.compare.majority and "majority" in baselines:
                transfer["majority"] = majority_baseline(task, train, test)
            if cfg.compare.linear_probe and cfg.model.init == "pretrained" and "linear_probe" in baselines:
                log.info("linear probe on frozen pretrained features...")
                # the model's encoder still holds the pretrained weights: fit() has not run yet
                transfer["linear_probe"] = linear_probe(encoder_of(model), task, train, test, seed=cfg.train.seed)
            if cfg.compare.zero_shot and cfg.model.init == "pretrained" and "zero_shot" in baselines:
                from transferkit.evaluation.zeroshot import zero_shot_baselines

                transfer.update(zero_shot_baselines(task, model, encoder_of(model), tokenizer, splits.test,
                                                    task.gold(test), cfg))
            atomic_write_text(base_path, json.dumps(transfer))

    # 4. Fine-tune, keep the best checkpoint, test it.
    result = fit(task, model, train, val, cfg.train, cfg.early_stopping, run_dir, accelerator=acc,
                 resume=resume, progress=progress, label="fine-tuning", methods=methods,
                 tensorboard=cfg.tracking.tensorboard, checkpoints=cfg.output.keep != "metrics")
    model = acc.unwrap_model(model)
    if methods:  # a schedule may have thawed parameters during training (gradual unfreezing): count them too
        from transferkit.modeling.freeze import count_params

        trainable = max(trainable, count_params(model)[0])

    def scores_of(m: Any, enc: Any) -> Any:
        return predictions(task, enc, infer(task, m, enc, device=acc.device, accelerator=acc)[0])

    methods.after_training(model=model, task=task, val=val, infer=scores_of, train=train)
    test_metrics, test_preds = evaluate(task, model, test, device=acc.device, accelerator=acc, batch_size=64)
    transfer["fine_tuned"] = test_metrics
    samples = getattr(task, "report_samples", None)  # generation: inputs, references and outputs side by side

    if cfg.compare.scratch:
        log.info("training the same architecture from scratch on the same data and budget...")
        scratch_methods = MethodStack.from_config(cfg.methods, run=cfg)  # the same methods, their own state
        scratch_model, _, _ = _build_model(cfg, task, ref, tokenizer, "scratch", scratch_methods)
        tuned = getattr(task, "threshold", None)  # the fine-tuned model's decision rule: the scratch model
        if tuned is not None:  # trains with argmax and gets its own
            task.threshold = None
        temperature = getattr(task, "temperature", None)  # likewise its calibration
        if temperature is not None:
            task.temperature = 1.0
        fit(task, scratch_model, train, val, cfg.train, cfg.early_stopping, run_dir / "scratch",
            accelerator=acc, resume=resume, progress=progress, label="training from scratch",
            methods=scratch_methods, tensorboard=cfg.tracking.tensorboard, checkpoints=cfg.output.keep != "metrics")
        scratch_methods.after_training(model=scratch_model, task=task, val=val, infer=scores_of, train=train)
        transfer["scratch"] = evaluate(task, scratch_model, test, device=acc.device, accelerator=acc)[0]
        if tuned is not None:
            task.threshold = tuned
        if temperature is not None:
            task.temperature = temperature

    if not main:
        return {}
    # 5. Ship: model folder, metrics, report.
    sample = task.collate([val.features[i] for i in range(min(16, len(val)))])
    sample = {k: v.to(acc.device) for k, v in sample.items()}
    if cfg.output.keep != "metrics":
        shipped = methods.export(acc.unwrap_model(model), run_dir=run_dir, forward=lambda m: task.forward(m, sample))
        save_model(shipped, tokenizer, task, run_dir / "model")
    metric = task.primary_metric
    summary = {
        "name": cfg.name, "task": task.name, "metric": metric,
        "labels": getattr(task, "types", None) or task.labels,  # NER: entity types, not tags
        "baseline_names": getattr(task, "baseline_names", {}),
        "model": cfg.model.path, "test": test_metrics, "methods": [d for d in methods.describe() if d["method"] in cfg.methods],
        "transfer": {k: {m: v[m] for m in (metric, *transfer_metrics(task)) if m in v} for k, v in transfer.items()},
        "data": splits.report.as_dict(),
        **({"samples": samples(splits.test, test_preds)} if samples is not None else {}),
        "train": {"steps": result.steps, "epochs": result.epochs_completed, "stopped_early": result.stopped_early,
                  "best_step": result.best_step, "best_validation": result.best_metric,
                  "seconds": result.train_seconds,
                  "samples_per_s": result.examples_seen / max(result.train_seconds, 1e-9),
                  "tokens_per_s": result.tokens_seen / max(result.train_seconds, 1e-9),
                  "peak_rss_mb": peak_rss_mb(), "allocator": allocator(), "processes": acc.num_processes, "trainable_params": trainable, "total_params": total,
                  "trainable_fraction": trainable / max(total, 1)},
    }
    if cfg.output.replay_sample:  # for a later `transferkit update`: the training examples, not augmented copies
        from transferkit.continual.store import write_sample

        originals = splits.train.subset(list(range(int(splits.train.meta.get("originals", len(splits.train))))))
        summary["replay_sample"] = write_sample(run_dir, originals, cfg.output.replay_sample, cfg.train.seed)
    if cfg.update.parent:
        summary["parent"] = str(cfg.update.parent)
    if cfg.report.explain:  # the words behind the most confident errors and correct predictions
        from types import SimpleNamespace

        from transferkit.evaluation.attributions import report_page

        shown = SimpleNamespace(task=task, model=model, tokenizer=tokenizer, device=acc.device, backend="torch")
        summary["explanations"] = report_page(shown, splits.test.texts, list(task.gold(test)), test_preds,
                                              cfg.report.explain, run_dir / "explanations.html")
    atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))
    if cfg.report.trust:
        from transferkit.recipes.trust import evaluate_run

        trust = evaluate_run(run_dir, ["calibration", "robustness", "bias"])
        summary["trust"] = {"file": "trust/trust.md", "ece": trust["calibration"]["test"],
                            "attack_success_rate": trust["robustness"].get("attack", {}).get("success_rate"),
                            "flip_rates": {k: v.get("flip_rate") for k, v in trust["robustness"]["invariance"].items()},
                            "bias_max_gap_points": {k: v["max_gap_points"] for k, v in trust["bias"]["probes"].items()}}
        summary["trust"]["ece"] = {k: v["ece"] for k, v in summary["trust"]["ece"].items()}
        atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))
    from transferkit.deploy.card import model_card

    if cfg.output.keep != "metrics":
        atomic_write_text(run_dir / "model" / "README.md", model_card(summary, cfg))
    write_report(run_dir, summary, result.history)
    if cfg.output.keep != "all":  # what a sweep of many runs does not need (checkpoints hold 3 model copies)
        import shutil

        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        shutil.rmtree(run_dir / "scratch" / "checkpoints", ignore_errors=True)
    if not cfg.update.parent and cfg.output.keep != "metrics":  # an update registers itself after its before/after
        from transferkit.registry import register

        register(run_dir, summary, cfg, "finetune")
    return summary
