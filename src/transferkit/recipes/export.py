"""export: a run folder -> an ONNX export folder (fp32, optionally int8 behind an accuracy gate).

    transferkit export runs/sentiment --int8          # -> runs/sentiment/export/

The export is checked on the run's own validation split before it is kept: ONNX Runtime's scores must equal
PyTorch's within `tolerance`, and the int8 model must not lose more than `max_drop` points of the task's
metric (else it is not written, unless `force`). The folder holds what prediction needs (model.onnx,
model.int8.onnx, tokenizer, task.json) and a table of size, speed and metric before and after
(export.json, README.md). `Predictor.load(folder)` and `transferkit predict folder` run it.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import ModelError, TransferkitError

log = logging.getLogger(__name__)

MANIFEST = "export.json"


class GateError(TransferkitError):
    """The int8 model lost more than allowed on validation; the fp32 export was written, the int8 one not."""

    exit_code = 1


def run_folder_of(path: Path) -> Path:
    """The run folder of a run, its model/ or its adapter/ folder."""
    from transferkit.recipes.rundir import CONFIG

    for cand in (path, path.parent):
        if (cand / CONFIG).is_file():
            return cand
    raise ModelError(f"'{path}' is not a run folder (no {CONFIG}): export checks the model on the run's validation "
                     "split, so give the run folder that `transferkit finetune` wrote.")


def run_splits(run_dir: Path, task: Any, limit: int | None) -> tuple[Any, Any, Any]:
    """The run's config and its training and validation splits (the first `limit` validation examples)."""
    from transferkit.config import load_config
    from transferkit.data.prepare import load_splits
    from transferkit.recipes.rundir import CONFIG

    cfg = load_config(run_dir / CONFIG)
    splits = load_splits(cfg.data, getattr(task, "read", None))
    val = splits.validation
    if len(val) == 0:
        raise ModelError(f"the run's validation split is empty ({run_dir / CONFIG}: data.split.validation): there "
                         "is nothing to check the export on.")
    if limit and len(val) > limit:
        val = val.subset(list(range(limit)))
    return cfg, splits.train, val


def _flat(scores: Any) -> np.ndarray:
    if isinstance(scores, np.ndarray):
        return scores.astype(np.float64).ravel()
    return np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in scores]) if scores else np.zeros(0)


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """The median seconds of `repeats` calls of fn, and its last result."""
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def export(path: str | Path, out: str | Path | None = None, *, int8: bool = False, max_drop: float = 0.5,
           force: bool = False, tolerance: float = 1e-4, limit: int | None = None, batch_size: int = 32,
           repeats: int = 1, prune_heads: float = 0.0, prune_ffn: float = 0.0, recover_epochs: float = 0.0,
           progress: bool = True) -> dict[str, Any]:
    """Export the run at `path`; returns the manifest (also written to OUT/export.json). Raises GateError
    (after writing the fp32 export) when int8 is refused.

    `prune_heads` / `prune_ffn`: remove that fraction of attention heads / FFN neurons first (importance on the
    run's training split), then fine-tune `recover_epochs` epochs through the same `fit()` (the run's training
    settings); the pruned PyTorch model is written to OUT/model (it loads in transformers with
    trust_remote_code=True)."""
    import torch

    from transferkit.deploy.onnx import INT8_FILE, ONNX_FILE, OnnxModel, export_onnx, traced_sample
    from transferkit.deploy.predictor import Predictor, model_dir_of
    from transferkit.deploy.quantize import quantize_onnx_int8
    from transferkit.evaluation.evaluate import infer, predictions
    from transferkit.training.checkpoint import atomic_write_text

    src = Path(path)
    if (src / ONNX_FILE).is_file():
        raise ModelError(f"'{src}' is an export already: give the run folder it came from.")
    run_dir = run_folder_of(src)
    model_dir = model_dir_of(src)
    dest = Path(out) if out else run_dir / "export"
    if dest.exists() and any(dest.iterdir()) and not (dest / MANIFEST).is_file():
        raise ModelError(f"'{dest}' exists and is not an export folder: give another --output (an existing export "
                         "is replaced).")
    torch_pred = Predictor.load(src, device="cpu")
    task, tokenizer, model = torch_pred.task, torch_pred.tokenizer, torch_pred.model
    if getattr(task, "generate", None) is not None:
        raise ModelError(f"'{src}' is a {task.name} run: it generates text token by token, which this ONNX export "
                         "(one forward pass per input) does not cover. Serve the run folder itself: "
                         f"`transferkit serve {src}` (PyTorch), or `transferkit predict {src}`.")
    assert isinstance(model, torch.nn.Module)
    metric = task.primary_metric
    cfg, train_split, val = run_splits(run_dir, task, limit)
    enc = task.encode(tokenizer, val)
    gold = task.gold(enc)
    log.info("export: %s validation examples (%s features) to check the export on", len(val), len(enc))

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        def score(runner: Any) -> tuple[float, Any, float]:
            secs, scores = timed(lambda: infer(task, runner, enc, batch_size=batch_size)[0], repeats)
            value = float(task.metrics(predictions(task, enc, scores), gold)[metric])
            return value, scores, secs

        def torch_variant(m: Any) -> tuple[dict[str, Any], Any]:
            value, scores, secs = score(m)
            size = sum(p.numel() * p.element_size() for p in m.parameters()) / 2**20
            return {"file": None, "size_mb": size, metric: value, "seconds": secs,
                    "parameters": sum(p.numel() for p in m.parameters())}, scores

        variants: dict[str, dict[str, Any]] = {}
        variants["pytorch"], t_scores = torch_variant(model)
        pruning = None
        if prune_heads > 0 or prune_ffn > 0:
            pruning = _prune(task, model, tokenizer, cfg, train_split, enc, tmp, heads=prune_heads, ffn=prune_ffn,
                             recover_epochs=recover_epochs, progress=progress)
            variants["pytorch_pruned"], t_scores = torch_variant(model)
            variants["pytorch_pruned"]["file"] = "model/"
            from transferkit.deploy.predictor import save_model

            save_model(model, tokenizer, task, tmp / "model")
        sample = traced_sample(task, enc.features, tokenizer.pad_token_id or 0)
        try:
            export_onnx(task, model, sample, tmp / ONNX_FILE)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - tracing errors come in many types
            raise ModelError(f"ONNX export of '{model_dir}' failed: {str(e).strip().splitlines()[0]}") from None
        fp32 = OnnxModel(tmp / ONNX_FILE)
        o_metric, o_scores, o_secs = score(fp32)
        diff = float(np.max(np.abs(_flat(t_scores) - _flat(o_scores)))) if len(enc) else 0.0
        variants["onnx"] = {"file": ONNX_FILE, "size_mb": fp32.size_mb, metric: o_metric, "seconds": o_secs,
                            "max_abs_diff": diff}
        log.info("ONNX vs PyTorch on validation: max |score difference| %.2e (tolerance %.0e)", diff, tolerance)
        if diff > tolerance:
            raise ModelError(f"the ONNX model's validation scores differ from PyTorch's by up to {diff:.2e}, more than "
                             f"the tolerance {tolerance:.0e}: the export is not faithful and was not written. "
                             "(A model with a data-dependent forward pass cannot be traced; report it with the "
                             "model's config.)")
        gate: dict[str, Any] | None = None
        if int8:
            quantize_onnx_int8(tmp / ONNX_FILE, tmp / INT8_FILE)
            q = OnnxModel(tmp / INT8_FILE)
            q_metric, _, q_secs = score(q)
            drop = 100 * (o_metric - q_metric)
            refused = drop > max_drop and not force
            gate = {"max_drop_points": max_drop, "drop_points": drop, "forced": force and drop > max_drop,
                    "written": not refused}
            variants["onnx_int8"] = {"file": None if refused else INT8_FILE, "size_mb": q.size_mb, metric: q_metric,
                                     "seconds": q_secs}
            log.info("int8: validation %s %.4f -> %.4f (%+.2f pt; max drop %.2f)", metric, o_metric, q_metric,
                     -drop, max_drop)
            del q
            if refused:
                (tmp / INT8_FILE).unlink()
        n = len(val)
        for v in variants.values():
            v["examples_per_s"] = n / max(v["seconds"], 1e-9)
        manifest = {"run": str(run_dir), "model": str(model_dir), "task": task.name, "metric": metric,
                    "validation_examples": n, "tolerance": tolerance, "opset": 17, "batch_size": batch_size,
                    "threads": torch.get_num_threads(), "variants": variants, "int8_gate": gate, "pruning": pruning}
        tokenizer.save_pretrained(tmp)
        for name in ("task.json", "config.json"):
            shutil.copy2(model_dir / name, tmp / name)
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2))
        atomic_write_text(tmp / "README.md", card(manifest))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest["dir"] = str(dest)
    if gate and not gate["written"]:
        raise GateError(f"int8 lost {gate['drop_points']:.2f} points of validation {metric} "
                        f"({variants['onnx'][metric]:.4f} -> {variants['onnx_int8'][metric]:.4f}), more than "
                        f"--max-drop {max_drop}: {INT8_FILE} was not written. The fp32 export is in '{dest}'. "
                        "--force writes the int8 model anyway; --max-drop sets the allowance.")
    return manifest


def _prune(task: Any, model: Any, tokenizer: Any, cfg: Any, train_split: Any, val_enc: Any, tmp: Path, *,
           heads: float, ffn: float, recover_epochs: float, progress: bool) -> dict[str, Any]:
    from transferkit.deploy.prune import count_heads, importance, prune

    train_enc = task.encode(tokenizer, train_split)
    heads_before, params_before = count_heads(model), sum(p.numel() for p in model.parameters())
    log.info("pruning: importance of heads and FFN neurons on %s training examples", min(len(train_enc), 1024))
    imp = importance(task, model, train_enc, max_examples=1024)
    info = prune(model, imp, heads=heads, ffn=ffn)
    info.update(heads_fraction=heads, ffn_fraction=ffn, heads_before=heads_before, heads_after=count_heads(model),
                params_before=params_before, params_after=sum(p.numel() for p in model.parameters()),
                recover_epochs=recover_epochs)
    log.info("pruned %s -> %s heads, %s -> %s parameters", heads_before, info["heads_after"], f"{params_before:,}",
             f"{info['params_after']:,}")
    if recover_epochs > 0:
        from transferkit.training.loop import fit

        train_cfg = cfg.train.model_copy(update={"epochs": recover_epochs, "max_steps": None})
        fit(task, model, train_enc, val_enc, train_cfg, cfg.early_stopping, tmp / "recovery", progress=progress,
            label="recovery fine-tuning")
        shutil.rmtree(tmp / "recovery", ignore_errors=True)
    return info


def card(m: dict[str, Any]) -> str:
    metric = m["metric"]
    base = m["variants"]["pytorch"]
    lines = [f"# ONNX export of {m['model']}", "",
             f"Task `{m['task']}`; checked on {m['validation_examples']} validation examples of the run (batch "
             f"{m['batch_size']}, {m['threads']} threads). Load it with `Predictor.load(this folder)` or "
             "`transferkit predict this-folder` (`--int8` for the int8 model).", "",
             f"| model | file | size MB | validation {metric} | examples/s | speed vs PyTorch |",
             "|---|---|---|---|---|---|"]
    for name, v in m["variants"].items():
        lines.append(f"| {name} | {v['file'] or '-'} | {v['size_mb']:.1f} | {v[metric]:.4f} | {v['examples_per_s']:.1f} "
                     f"| {v['examples_per_s'] / base['examples_per_s']:.2f}x |")
    lines += ["", f"ONNX vs PyTorch: max |score difference| {m['variants']['onnx']['max_abs_diff']:.2e} "
              f"(tolerance {m['tolerance']:.0e})."]
    p = m.get("pruning")
    if p:
        lines.append(f"Pruned: {p['heads_before']} -> {p['heads_after']} attention heads, FFN {p['ffn_fraction']:.0%} "
                     f"of neurons removed, {p['params_before']:,} -> {p['params_after']:,} parameters; recovery "
                     f"fine-tuning: {p['recover_epochs']:g} epochs. The pruned PyTorch model is in model/.")
    g = m.get("int8_gate")
    if g:
        verdict = ("written" if not g["forced"] else "written with --force") if g["written"] else "NOT written"
        lines.append(f"int8 gate: {g['drop_points']:.2f} points of validation {metric} lost (allowed: "
                     f"{g['max_drop_points']}): {verdict}.")
    return "\n".join(lines) + "\n"
