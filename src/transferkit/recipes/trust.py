"""`transferkit evaluate RUN --suite calibration,...`: the trust checks on any finished fine-tuning run folder.

Each suite reads the run's own splits (its resolved config) and its saved model, and writes its results into
RUN/trust/ (trust.json, trust.md and plots); nothing in the run itself changes unless asked (`--apply` writes a
fitted temperature into model/task.json, so predict and serve use it from then on).

- calibration: ECE, maximum calibration error and NLL on the test split at the model's temperature, a
  temperature fitted on the validation split (never the test split), the test figures after it, and the
  reliability diagram before and after.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transferkit.errors import ConfigError

log = logging.getLogger(__name__)

SUITES = ("calibration",)
CLASSIFIERS = ("text_classification", "relation_extraction")


def _probabilities(pred: Any, split: Any) -> tuple[Any, Any]:
    from transferkit.evaluation.evaluate import infer

    pred.task.check(split)
    enc = pred.task.encode(pred.tokenizer, split)
    scores, _ = infer(pred.task, pred.model, enc, device=pred.device)
    return scores, pred.task.gold(enc)


def calibration(run_dir: Path, pred: Any, splits: Any, out: Path, *, apply: bool) -> dict[str, Any]:
    import numpy as np

    from transferkit.evaluation.calibration import fit_temperature, nll, plot_reliability, reliability, rescale

    task = pred.task
    if task.name not in CLASSIFIERS or getattr(task, "multilabel", False):
        raise ConfigError([f"evaluate --suite calibration: for single-label classification and relation runs; "
                           f"{run_dir} is a {task.name} run"])
    if not len(splits.validation) or not len(splits.test):
        raise ConfigError([f"evaluate --suite calibration: {run_dir}'s data has no validation or no test split "
                           f"(validation {len(splits.validation)}, test {len(splits.test)})"])
    val_p, val_y = _probabilities(pred, splits.validation)
    test_p, test_y = _probabilities(pred, splits.test)
    val_p, test_p = np.asarray(val_p), np.asarray(test_p)
    current = float(task.temperature)
    factor = fit_temperature(val_p, val_y, low=0.05 / current, high=20.0 / current)
    fitted = current * factor
    at_one = 1.0 / current  # the probabilities of the raw logits
    rows = {"temperature 1 (raw logits)": rescale(test_p, at_one)}
    if current != 1.0:
        rows[f"saved temperature {current:.3f}"] = test_p
    rows[f"fitted temperature {fitted:.3f}"] = rescale(test_p, factor)
    table = {}
    for name, p in rows.items():
        rel = reliability(p, test_y)
        table[name] = {"ece": rel["ece"], "mce": rel["mce"], "nll": nll(p, test_y),
                       "accuracy": float((p.argmax(1) == np.asarray(test_y)).mean()), "reliability": rel}
    plot_reliability({k: v["reliability"] for k, v in table.items()}, out / "reliability.png",
                     title=f"{run_dir.name}: test reliability")
    result = {"saved_temperature": current, "fitted_temperature": fitted,
              "validation": {"nll_before": nll(val_p, val_y), "nll_after": nll(rescale(val_p, factor), val_y),
                             "ece_before": reliability(val_p, val_y)["ece"],
                             "ece_after": reliability(rescale(val_p, factor), val_y)["ece"], "size": len(val_y)},
              "test": table, "test_size": len(test_y), "applied": False}
    if apply:
        from transferkit.deploy.predictor import model_dir_of
        from transferkit.training.checkpoint import atomic_write_text

        path = model_dir_of(run_dir) / "task.json"
        desc = json.loads(path.read_text(encoding="utf-8"))
        desc["temperature"] = fitted
        atomic_write_text(path, json.dumps(desc, indent=2, ensure_ascii=False))
        result["applied"] = True
        log.info("wrote temperature %.4f into %s", fitted, path)
    return result


def calibration_markdown(r: dict[str, Any]) -> list[str]:
    v = r["validation"]
    lines = ["## Calibration", "",
             f"Temperature fitted on the validation split ({v['size']} examples): **{r['fitted_temperature']:.3f}** "
             f"(validation NLL {v['nll_before']:.4f} -> {v['nll_after']:.4f}, ECE {v['ece_before']:.4f} -> "
             f"{v['ece_after']:.4f}). " + ("Written into the model's task.json." if r["applied"] else
                                          "Not written into the model (`--apply` does)."), "",
             f"Test split ({r['test_size']} examples):", "",
             "| probabilities | accuracy | ECE | max CE | NLL |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {t['accuracy']:.4f} | {t['ece']:.4f} | {t['mce']:.4f} | {t['nll']:.4f} |"
              for k, t in r["test"].items()]
    return [*lines, "", "![reliability](reliability.png)", ""]


def evaluate_run(run_dir: Path, suites: list[str], *, apply: bool = False) -> dict[str, Any]:
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.predictor import Predictor
    from transferkit.recipes.update import parent_config
    from transferkit.training.checkpoint import atomic_write_text

    bad = [s for s in suites if s not in SUITES]
    if bad or not suites:
        raise ConfigError([f"evaluate --suite: unknown suite(s) {bad}; choose among {', '.join(SUITES)}"
                           if bad else f"evaluate --suite: name at least one of {', '.join(SUITES)}"])
    run_dir = Path(run_dir)
    cfg = parent_config(run_dir)  # a finished fine-tuning run, or an error saying what is missing
    pred = Predictor.load(run_dir)
    splits = load_splits(cfg.data, getattr(pred.task, "read", None))
    out = run_dir / "trust"
    out.mkdir(exist_ok=True)
    path = out / "trust.json"
    results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    results["run"] = str(run_dir)
    for suite in suites:
        log.info("evaluate: %s suite on %s", suite, run_dir)
        results[suite] = calibration(run_dir, pred, splits, out, apply=apply)
    atomic_write_text(path, json.dumps(results, indent=2, ensure_ascii=False))
    md = [f"# Trust checks: {run_dir.name}", ""]
    if "calibration" in results:
        md += calibration_markdown(results["calibration"])
    atomic_write_text(out / "trust.md", "\n".join(md))
    return results
