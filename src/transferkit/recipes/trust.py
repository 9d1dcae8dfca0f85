"""`transferkit evaluate RUN --suite calibration,...`: the trust checks on any finished fine-tuning run folder.

Each suite reads the run's own splits (its resolved config) and its saved model, and writes its results into
RUN/trust/ (trust.json, trust.md and plots); nothing in the run itself changes unless asked (`--apply` writes a
fitted temperature into model/task.json, so predict and serve use it from then on).

- calibration: ECE, maximum calibration error and NLL on the test split at the model's temperature, a
  temperature fitted on the validation split (never the test split), the test figures after it, and the
  reliability diagram before and after.
- robustness: CheckList-style invariance and directional tests on a seeded sample of the test split, and the
  greedy word-substitution attack (evaluation/robustness.py).
- bias: template probes that vary only a group term (evaluation/bias.py).
- explanations: integrated-gradient highlights of the most confident test errors and correct predictions
  (trust/explanations.html).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transferkit.errors import ConfigError

log = logging.getLogger(__name__)

SUITES = ("calibration", "robustness", "bias", "explanations")
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
                       "accuracy": float((task.decide(p) == np.asarray(test_y)).mean()), "reliability": rel}
    plot_reliability({k: v["reliability"] for k, v in table.items()}, out / "reliability.png",
                     title=f"{run_dir.name}: test reliability")
    result = {"saved_temperature": current, "fitted_temperature": fitted,
              "validation": {"nll_before": nll(val_p, val_y), "nll_after": nll(rescale(val_p, factor), val_y),
                             "ece_before": reliability(val_p, val_y)["ece"],
                             "ece_after": reliability(rescale(val_p, factor), val_y)["ece"], "size": len(val_y)},
              "test": table, "test_size": len(test_y), "applied": False}
    if apply and getattr(task, "threshold", None) is not None:
        raise ConfigError([f"evaluate --apply: {run_dir}'s model has a decision threshold tuned on its current "
                           f"probabilities ({task.threshold:.4f}); a new temperature would change its decisions. Train "
                           "with methods.temperature_scaling (it runs before threshold_tuning) instead"])
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


def _scorer(pred: Any) -> Any:
    import numpy as np

    return lambda texts: np.asarray(pred.predict_scores(list(texts), batch_size=64)) if texts else np.zeros((0, 0))


def _text_classifier(run_dir: Path, pred: Any, suite: str) -> None:
    task = pred.task
    if task.name != "text_classification" or getattr(task, "multilabel", False):
        raise ConfigError([f"evaluate --suite {suite}: for single-label text classification runs; {run_dir} is a "
                           f"{task.name}{' (multilabel)' if getattr(task, 'multilabel', False) else ''} run"])


def _sample(splits: Any, pred: Any, n: int, seed: int) -> tuple[list[str], Any]:
    import random

    import numpy as np

    test = splits.test
    pred.task.check(test)
    if test.text_pairs is not None:
        raise ConfigError(["evaluate: robustness and bias suites perturb single texts; this run classifies text pairs"])
    idx = sorted(random.Random(seed).sample(range(len(test)), min(n, len(test))))
    index = {y: i for i, y in enumerate(pred.task.labels)}
    return [test.texts[i] for i in idx], np.array([index[test.labels[i]] for i in idx])


def robustness(run_dir: Path, pred: Any, splits: Any, *, sample: int, attack_sample: int, seed: int,
               candidates: str) -> dict[str, Any]:
    from transferkit.evaluation import robustness as rb
    from transferkit.methods.augment_common import is_chinese
    from transferkit.methods import synonyms as syn

    _text_classifier(run_dir, pred, "robustness")
    texts, gold = _sample(splits, pred, sample, seed)
    score = _scorer(pred)
    result = rb.checklist(score, texts, gold, list(pred.task.labels), seed=seed, decide=pred.task.decide)
    chinese = sum(map(is_chinese, texts)) > len(texts) / 2
    if candidates == "auto":
        candidates = "synonyms" if chinese or not syn.missing_wordnet() else "embedding"
    lookup: Callable[[str], list[str]]
    if candidates == "synonyms":
        if chinese:
            lookup = syn.chinese()
        else:
            missing = syn.missing_wordnet()
            if missing:
                raise ConfigError([f"evaluate --attack-candidates synonyms: {missing}"])
            lookup = syn.wordnet()
    else:
        lookup = rb.embedding_neighbours(pred)
    if attack_sample:  # a seeded subset of the sample (the sample itself is in split order)
        import random

        chosen = sorted(random.Random(f"attack:{seed}").sample(range(len(texts)), min(attack_sample, len(texts))))
        result["attack"] = {"candidates": candidates, **rb.attack(
            score, [texts[i] for i in chosen], gold[chosen], candidates=lookup, decide=pred.task.decide)}
    result["seed"] = seed
    return result


def bias(run_dir: Path, pred: Any, splits: Any) -> dict[str, Any]:
    from transferkit.evaluation.bias import bias_table
    from transferkit.methods.augment_common import is_chinese

    _text_classifier(run_dir, pred, "bias")
    if splits.test.text_pairs is not None:
        raise ConfigError(["evaluate --suite bias: the probes are single sentences; this run classifies text pairs"])
    texts = splits.test.texts[:200] or splits.train.texts[:200]
    lang = "zh" if sum(map(is_chinese, texts)) > len(texts) / 2 else "en"
    return bias_table(_scorer(pred), list(pred.task.labels), lang)


def robustness_markdown(r: dict[str, Any]) -> list[str]:
    lines = ["## Robustness (CheckList-style)", "",
             f"{r['n']} test texts (seed {r['seed']}), accuracy {r['accuracy']:.4f}. Invariance: the label should not "
             "change.", "", "| perturbation | texts | accuracy before | after | flip rate |", "|---|---|---|---|---|"]
    for k, v in r["invariance"].items():
        lines.append(f"| {k} | {v['n']} | " + (f"{v['accuracy_before']:.4f} | {v['accuracy_after']:.4f} | "
                                              f"{v['flip_rate']:.4f} |" if v["n"] else "- | - | - |"))
    if r.get("directional"):
        lines += ["", f"Directional (tolerance {r['tolerance']}):", "",
                  "| test | texts | expectation | violation rate | mean change |", "|---|---|---|---|---|"]
        for k, v in r["directional"].items():
            lines.append(f"| {k} | {v['n']} | {v.get('expectation', '-')} | " +
                         (f"{v['violation_rate']:.4f} | {v['mean_change']:+.4f} |" if v["n"] else "- | - |"))
    elif r.get("directional_note"):
        lines += ["", f"Directional tests skipped: {r['directional_note']}."]
    if "attack" in r:
        a = r["attack"]
        lines += ["", f"Greedy word-substitution attack ({a['candidates']} candidates, at most 20% of the words): "
                  f"success rate **{a['success_rate']:.4f}** on {a['attacked']} correctly classified texts, "
                  f"{a['queries_mean']:.1f} queries per text, {100 * a['words_changed_mean']:.1f}% of the words "
                  f"changed in a successful attack; accuracy under attack {a['accuracy_under_attack']:.4f}."]
        for e in a["examples"][:3]:
            lines.append(f"- {e['before']!r} -> {e['after']!r}")
    return [*lines, ""]


def bias_markdown(r: dict[str, Any]) -> list[str]:
    lines = ["## Bias probes", "", f"Mean P({r['reference_label']}) over neutral templates that differ only in the "
             "group term; gap: points from the mean of the groups.", ""]
    for probe, p in r["probes"].items():
        lines += [f"**{probe}**: largest gap between two groups {p['max_gap_points']:.2f} points.", "",
                  "| group | templates | P(" + r["reference_label"] + ") | gap (points) |", "|---|---|---|---|"]
        lines += [f"| {g} | {v['n']} | {v[r['reference_label']]:.4f} | {p['gap_points'][g]:+.2f} |"
                  for g, v in p["groups"].items()]
        lines.append("")
    return lines


def explanations(run_dir: Path, pred: Any, splits: Any, out: Path, *, n: int) -> dict[str, Any]:
    from transferkit.evaluation.attributions import report_page

    _text_classifier(run_dir, pred, "explanations")
    test = splits.test
    probs, gold = _probabilities(pred, test)
    return report_page(pred, test.texts, list(gold), probs, n, out / "explanations.html")


def evaluate_run(run_dir: Path, suites: list[str], *, apply: bool = False, sample: int = 500,
                 attack_sample: int = 200, seed: int = 0, candidates: str = "auto", explain: int = 10) -> dict[str, Any]:
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.predictor import Predictor
    from transferkit.recipes.update import parent_config
    from transferkit.training.checkpoint import atomic_write_text

    bad = [s for s in suites if s not in SUITES]
    if bad or not suites:
        raise ConfigError([f"evaluate --suite: unknown suite(s) {bad}; choose among {', '.join(SUITES)}"
                           if bad else f"evaluate --suite: name at least one of {', '.join(SUITES)}"])
    run_dir = Path(run_dir)
    cfg = parent_config(run_dir, "evaluate")  # a finished fine-tuning run, or an error saying what is missing
    pred = Predictor.load(run_dir)
    splits = load_splits(cfg.data, getattr(pred.task, "read", None))
    out = run_dir / "trust"
    out.mkdir(exist_ok=True)
    path = out / "trust.json"
    results: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    results["run"] = str(run_dir)
    for suite in suites:
        log.info("evaluate: %s suite on %s", suite, run_dir)
        if suite == "calibration":
            results[suite] = calibration(run_dir, pred, splits, out, apply=apply)
        elif suite == "robustness":
            results[suite] = robustness(run_dir, pred, splits, sample=sample, attack_sample=attack_sample, seed=seed,
                                        candidates=candidates)
        elif suite == "bias":
            results[suite] = bias(run_dir, pred, splits)
        else:
            results[suite] = explanations(run_dir, pred, splits, out, n=explain)
    atomic_write_text(path, json.dumps(results, indent=2, ensure_ascii=False))
    md = [f"# Trust checks: {run_dir.name}", ""]
    if "calibration" in results:
        md += calibration_markdown(results["calibration"])
    if "robustness" in results:
        md += robustness_markdown(results["robustness"])
    if "bias" in results:
        md += bias_markdown(results["bias"])
    if "explanations" in results:
        e = results["explanations"]
        md += ["## Explanations", "", f"Integrated gradients ({e['steps']} steps) of the {e['errors']} most confident "
               f"test errors and the {e['correct']} most confident correct predictions: "
               f"[explanations.html](explanations.html).", ""]
    atomic_write_text(out / "trust.md", "\n".join(md))
    return results
