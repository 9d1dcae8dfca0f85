"""update: a finished run + new data -> a new run fine-tuned from the old one's model, and what it cost.

The new run's config is the parent's resolved config with the new data, the parent's model as the starting
point and `update.parent` pointing back (lineage); the anti-forgetting methods (methods.replay, methods.l2sp,
methods.ewc) are plug-ins of the same `fit()`. For classification, labels of the new data that the parent did
not have are appended to the parent's (class-incremental): the head grows, its old rows kept.

After training, both models score both test splits: the parent's (before vs after: the forgetting score, per
class) and the new data's (before vs after: the gain). They go to update.json and the run's report.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transferkit.config import RunConfig, _validate, apply_overrides, read_yaml
from transferkit.errors import ConfigError, DataError
from transferkit.recipes.rundir import CONFIG

log = logging.getLogger(__name__)

#: data fields that describe where the parent's examples came from (replaced by the new data)
_SOURCE_FIELDS = ("source", "train", "validation", "test", "limit", "train_limit", "train_sample_seed")


def parent_config(parent: Path, command: str = "update") -> RunConfig:
    """The resolved config of a finished fine-tuning run, or an error that says what is missing."""
    parent = Path(parent)
    missing = [f for f in (CONFIG, "metrics.json", "model/config.json") if not (parent / f).is_file()]
    if missing:
        raise ConfigError([f"{command}: {parent} is not a finished fine-tuning run (missing {', '.join(missing)}). "
                           "Give the folder of a run that `transferkit finetune` completed, e.g. runs/sentiment."])
    return _validate(read_yaml(parent / CONFIG), RunConfig, str(parent / CONFIG))


def plan(parent: Path, data: str | None, *, name: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The update run's config: the parent's, with the new data, the parent's model and lineage. For text
    classification the labels are the parent's followed by the new data's others (unless task.labels is given)."""
    parent = Path(parent).expanduser().resolve()  # lineage that does not depend on the working directory
    pcfg = parent_config(parent)
    raw = pcfg.model_dump(mode="json")
    raw["name"] = name or f"{pcfg.name}_update"
    raw["model"].update(path=str(parent / "model"), init="pretrained")
    overrides = list(overrides or [])
    new_files = any(o.split("=", 1)[0].strip() in {f"data.{k}" for k in ("source", "train", "validation", "test")}
                    for o in overrides)
    if data is not None or new_files:  # none of the parent's data stays: only what is given now
        for key in _SOURCE_FIELDS:
            raw["data"][key] = None
    if data is not None:
        raw["data"]["source"] = data
    raw["update"] = {"parent": str(parent), "evaluate_parent": True}
    # the baselines describe the parent's starting point, not this run's: the before/after table replaces them
    raw["compare"] = {"majority": False, "linear_probe": False, "scratch": False}
    raw["methods"] = {}  # the parent's methods are not inherited: say which ones the update uses
    if data is None and not new_files:
        raise ConfigError([f"update: no new data for {parent}; give --data FILE (or a built-in name), or set the "
                           "files with data.train=... data.validation=... data.test=..."])
    user_labels = any(o.split("=", 1)[0].strip() == "task.labels" for o in overrides)
    raw = apply_overrides(raw, overrides)
    cfg = _validate(raw, RunConfig, f"update of {parent}")
    if cfg.task.type != pcfg.task.type:
        raise ConfigError([f"task -> type: the parent is a {pcfg.task.type} run; an update keeps the task "
                           f"(got {cfg.task.type})"])
    if cfg.data.source is None and cfg.data.train is None:
        raise ConfigError(["update: no new data; give --data FILE (or a built-in name)"])
    if cfg.run_dir.expanduser().resolve() == parent:
        raise ConfigError([f"output -> dir: the update's run folder would be its parent's ({parent}): output.dir "
                           f"'{cfg.output.dir}' has no {{name}}. Give output.dir=DIR/{{name}} (and --name)."])
    if cfg.task.type == "text_classification" and not user_labels:
        # the parent's labels (an update of an update inherits them in its config) plus the new data's
        cfg = _with_labels(cfg.model_copy(update={"task": cfg.task.model_copy(update={"labels": None})}), parent)
    return cfg


def _with_labels(cfg: RunConfig, parent: Path) -> RunConfig:
    """The parent's labels in their order, then the new data's labels it did not have (the head grows)."""
    from transferkit.data.prepare import load_splits
    from transferkit.tasks import build_task

    old = list(json.loads((parent / "metrics.json").read_text())["labels"])
    probe = build_task(cfg)
    train = load_splits(cfg.data, getattr(probe, "read", None)).train
    probe.fit_labels(train)
    new = [y for y in getattr(probe, "labels", []) if y not in old]
    if new:
        log.info("update: new labels %s join the parent's %s (the head grows)", new, old)
    return cfg.model_copy(update={"task": cfg.task.model_copy(update={"labels": old + new})})


def run(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    from transferkit.recipes import finetune

    if not cfg.update.parent:
        raise ConfigError(["update -> parent: not set; `transferkit update RUN --data NEW` sets it"])
    t0 = time.time()
    summary = finetune.run(cfg, resume=resume, overwrite=overwrite, progress=progress)
    if not summary:  # not the main process
        return summary
    wall = time.time() - t0
    if cfg.update.evaluate_parent:
        summary["update"] = measure(cfg, wall_s=wall)
        _append_report(cfg.run_dir, summary["update"])
    from transferkit.registry import register

    register(cfg.run_dir, summary, cfg, "update")
    return summary


def measure(cfg: RunConfig, *, wall_s: float | None = None) -> dict[str, Any]:
    """The parent model and the updated one on the parent's test split and on the new test split."""
    from transferkit.data.prepare import load_splits
    from transferkit.evaluation.evaluate import evaluate
    from transferkit.modeling import load as mload
    from transferkit.modeling.grow import silence_new_rows
    from transferkit.tasks import build_task
    from transferkit.training.checkpoint import atomic_write_text

    parent = Path(str(cfg.update.parent))
    pcfg = parent_config(parent)
    run_dir = cfg.run_dir
    task = build_task(cfg)
    new_splits = load_splits(cfg.data, getattr(task, "read", None))
    task.fit_labels(new_splits.train)
    try:
        old_test = load_splits(pcfg.data, getattr(task, "read", None)).test
    except (DataError, ConfigError, OSError) as e:
        log.warning("update: the parent's test split could not be rebuilt (%s): forgetting not measured", e)
        old_test = None
    tokenizer = mload.load_tokenizer(str(run_dir / "model"))
    after = task.build_model(str(run_dir / "model"), init="pretrained", size=None, dropout=None, tokenizer=tokenizer)
    before = silence_new_rows(task.build_model(str(parent / "model"), init="pretrained", size=None, dropout=None,
                                               tokenizer=tokenizer))
    metric = task.primary_metric
    out: dict[str, Any] = {"parent": str(parent), "metric": metric, "wall_s": wall_s}
    for split_name, split in (("parent_test", old_test), ("new_test", new_splits.test)):
        if split is None:
            continue
        task.check(split)
        enc = task.encode(tokenizer, split)
        b = evaluate(task, before.eval(), enc, batch_size=64)[0]
        a = evaluate(task, after.eval(), enc, batch_size=64)[0]
        row: dict[str, Any] = {"examples": len(split), "before": b[metric], "after": a[metric],
                               "change": a[metric] - b[metric]}
        if "per_class" in a:  # per-class accuracy is the recall of that class
            row["per_class"] = {c: {"before": b["per_class"][c]["recall"], "after": v["recall"],
                                    "support": v.get("support")} for c, v in a["per_class"].items()}
        out[split_name] = row
    if "parent_test" in out:
        out["forgetting"] = -out["parent_test"]["change"]  # > 0: the update lost that much on the old test split
    out["gain"] = out["new_test"]["change"]
    atomic_write_text(run_dir / "update.json", json.dumps(out, indent=2))
    return out


def _append_report(run_dir: Path, u: dict[str, Any]) -> None:
    m = u["metric"]
    lines = ["", "## Update: before vs after", "",
             f"Parent run: `{u['parent']}`. {m} of the parent's model (before) and of this run's (after).", "",
             f"| test split | examples | before | after | change |", "|---|---|---|---|---|"]
    for key, label in (("parent_test", "the parent's (forgetting)"), ("new_test", "the new data's (gain)")):
        if key in u:
            r = u[key]
            lines.append(f"| {label} | {r['examples']} | {r['before']:.4f} | {r['after']:.4f} | {r['change']:+.4f} |")
    per = u.get("parent_test", {}).get("per_class")
    if per:
        lines += ["", "Per class on the parent's test split (accuracy = recall of the class):", "",
                  "| class | before | after | change |", "|---|---|---|---|"]
        lines += [f"| {c} | {v['before']:.4f} | {v['after']:.4f} | {v['after'] - v['before']:+.4f} |"
                  for c, v in per.items()]
    report = run_dir / "report.md"
    with report.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
