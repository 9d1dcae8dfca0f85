"""Few-shot benchmark: k labelled examples per class, several seeds, every method on the same samples.

For each k and seed the training set is exactly k examples of each label (`data.train_per_class`, drawn from the
training split with the seed) and the validation set k of each label too (`data.validation_per_class`: model
choice sees no more labels than a few-shot user has); the test split is the whole one, the same for every run.
Each method is a set of config overrides on the user's config (below; `fewshot.overrides` changes them), run
through the normal `finetune` recipe, keeping only its metrics. Zero-shot methods need no sample: they are
scored once. Every finished run is a row of fewshot.jsonl in the output folder, so an interrupted benchmark
resumes where it stopped; fewshot.md / fewshot.png are the mean ± std table and plot.

    transferkit fewshot configs/fewshot_rt.yaml --shots 8,16,32,64 --seeds 1,2,3,4,5,6,7,8,9,10
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from transferkit.errors import ConfigError

log = logging.getLogger(__name__)

#: what every few-shot run leaves out: baselines, tracking, registry, model folders and checkpoints
COMMON = ["compare.majority=false", "compare.linear_probe=false", "compare.scratch=false", "compare.zero_shot=false",
          "registry.enabled=false", "tracking.tensorboard=false", "output.keep=metrics", "output.replay_sample=0"]

#: method -> overrides. Budgets are in optimizer steps (batch 16), validation every 10 steps, best step kept.
METHODS: dict[str, list[str]] = {
    # logistic-regression-like: a linear layer on the frozen mean-pooled sentence embedding
    "head_only": ["task.pooling=mean", "freeze.mode=all_but_head", "train.optimizer.lr=1e-2", "train.max_steps=100"],
    # every weight, mean pooling (what MiniLM was trained for)
    "full": ["task.pooling=mean", "train.optimizer.lr=5e-5", "train.max_steps=100"],
    # full, the classifier starting from the label descriptions (the zero-shot head): methods.description_init
    "full_desc": ["task.pooling=mean", "methods.description_init.temperature=0.05", "train.optimizer.lr=5e-5",
                  "train.max_steps=100"],
    # PET / LM-BFF: the masked LM (fewshot.mlm) with the config's task.prompt as the classifier
    "prompt": ["task.head=prompt", "train.optimizer.lr=2e-5", "train.max_steps=100"],
    # SetFit's recipe: pairs (20 per example, one pass), body lr 2e-5, then a logistic-regression head
    "contrastive": ["task.pooling=mean", "methods.contrastive.pairs=20", "train.optimizer.lr=2e-5", "train.epochs=1",
                    "train.schedule.warmup_ratio=0.1"],
}
ZERO_SHOT = ("zero_shot_embedding", "zero_shot_cloze", "zero_shot_cloze_calibrated")
ALL = (*ZERO_SHOT, *METHODS)


class FewShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shots: list[int] = Field([8, 16, 32, 64], description="Examples per class (k) of the training samples.")
    seeds: list[int] = Field(list(range(1, 11)), description="Seeds: each draws its own samples and initialisation.")
    methods: list[str] = Field(list(ALL), description=f"Methods to run, of {list(ALL)}.")
    mlm: str | None = Field(None, description="Masked LM for the cloze zero-shot and the prompt method (a "
                            "`transferkit pretrain` run's model/, zh-mini, a hub BERT); without one they are skipped.")
    overrides: dict[str, list[str]] = Field(default_factory=dict, description="Method -> extra dotted overrides "
                                            "(after the built-in ones), e.g. {full: [train.optimizer.lr=3e-5]}.")
    budgets: dict[str, dict[int, int]] = Field(default_factory=dict, description="Method -> k -> optimizer steps "
                                               "(chosen on validation by bench/fewshot_select.py); a k without an "
                                               "entry takes the nearest k's (in log scale); without any entry a "
                                               "method keeps its built-in budget.")


def split_fewshot(raw: dict[str, Any], source: str) -> tuple[dict[str, Any], FewShotConfig]:
    from transferkit.config import _problems

    raw = dict(raw)
    section = raw.pop("fewshot", None) or {}
    try:
        fs = FewShotConfig.model_validate(section)
    except ValidationError as e:
        raise ConfigError([f"fewshot -> {p}" for p in _problems(e, FewShotConfig)], source=source) from None
    bad = [m for m in [*fs.methods, *fs.overrides, *fs.budgets] if m not in ALL]
    if bad:
        raise ConfigError([f"fewshot -> methods: unknown method(s) {bad}; choose among {list(ALL)}"], source=source)
    if any(n < 1 for b in fs.budgets.values() for n in b.values()):
        raise ConfigError(["fewshot -> budgets: every budget is at least 1 optimizer step"], source=source)
    if any(k < 1 for b in fs.budgets.values() for k in b):
        raise ConfigError(["fewshot -> budgets: every k is at least 1 example per class"], source=source)
    untrained = [m for m in fs.budgets if m not in METHODS]
    if untrained:
        raise ConfigError([f"fewshot -> budgets: {untrained} train nothing (zero-shot): no budget to give"],
                          source=source)
    if any(k < 1 for k in fs.shots) or not fs.shots or not fs.seeds:
        raise ConfigError(["fewshot -> shots / seeds: give at least one k >= 1 and one seed"], source=source)
    return raw, fs


def budget(fs: FewShotConfig, method: str, k: int) -> int | None:
    """Optimizer steps of `method` at k from fewshot.budgets (the nearest k in log scale), or None."""
    import math

    table = fs.budgets.get(method)
    if not table:
        return None
    return table[min(table, key=lambda b: (abs(math.log(b / k)), b))]


def method_overrides(fs: FewShotConfig, method: str, k: int, seed: int, name: str, out: Path) -> list[str]:
    steps = budget(fs, method, k)
    over = [*COMMON, *METHODS[method], *([f"train.max_steps={steps}"] if steps else []), *fs.overrides.get(method, []),
            f"data.train_per_class={k}", f"data.validation_per_class={k}", f"data.train_sample_seed={seed}",
            f"train.seed={seed}", "train.batch_size=16", "train.eval_every=10", "early_stopping.enabled=false",
            f"name={name}", f"output.dir={out}/{{name}}"]
    if method == "prompt":
        over.append(f"model.path={fs.mlm}")
    if method == "contrastive":  # one pass over the pairs: validate at its end only
        over.remove("train.eval_every=10")
    return over


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def zero_shot_rows(raw: dict[str, Any], fs: FewShotConfig, source: str) -> list[dict[str, Any]]:
    """The zero-shot methods on the whole test split (no training example is used)."""
    import torch

    from transferkit.config import _validate, apply_overrides
    from transferkit.config import RunConfig
    from transferkit.data.prepare import load_splits
    from transferkit.evaluation.zeroshot import zero_shot_baselines
    from transferkit.modeling import load as mload
    from transferkit.recipes.finetune import encoder_of
    from transferkit.tasks import build_task

    rows = []
    wanted = [m for m in fs.methods if m in ZERO_SHOT]
    setups: list[tuple[list[str], str]] = [([], "zero_shot_embedding")]
    if fs.mlm and any(m.startswith("zero_shot_cloze") for m in wanted):
        setups.append(([f"model.path={fs.mlm}", "task.head=prompt"], "zero_shot_cloze"))
    for extra, first in setups:
        if first not in wanted and not (first == "zero_shot_cloze" and "zero_shot_cloze_calibrated" in wanted):
            continue
        cfg = _validate(apply_overrides(json.loads(json.dumps(raw)), ["compare.zero_shot=true", *extra]), RunConfig,
                        source)
        t0 = time.perf_counter()
        ref = mload.resolve(cfg.model.path)
        tok = mload.load_tokenizer(ref)
        task = build_task(cfg)
        splits = load_splits(cfg.data, getattr(task, "read", None))
        task.fit_labels(splits.train)
        task.check(splits.test)
        test = task.encode(tok, splits.test)
        model = task.build_model(ref, init="pretrained", size=None, dropout=cfg.model.dropout, tokenizer=tok).eval()
        with torch.inference_mode():
            res = zero_shot_baselines(task, model, encoder_of(model), tok, splits.test, task.gold(test), cfg)
        wall = time.perf_counter() - t0
        for method, metrics in res.items():
            if method in wanted and (first == "zero_shot_cloze") == method.startswith("zero_shot_cloze"):
                rows.append({"method": method, "k": 0, "seed": 0, "accuracy": metrics["accuracy"],
                             "macro_f1": metrics["macro_f1"], "wall_s": wall, "model": cfg.model.path,
                             **({"content_free_probabilities": metrics["content_free_probabilities"]}
                                if "content_free_probabilities" in metrics else {})})
    majority = load_splits(_validate(json.loads(json.dumps(raw)), RunConfig, source).data).test.labels
    top = max(set(majority), key=majority.count)
    rows.append({"method": "majority", "k": 0, "seed": 0, "accuracy": majority.count(top) / len(majority),
                 "macro_f1": None, "wall_s": 0.0})
    return rows


def run_fewshot(config: Path, overrides: list[str], *, shots: list[int] | None = None,
                seeds: list[int] | None = None, methods: list[str] | None = None,
                progress: bool = False) -> dict[str, Any]:
    from transferkit.config import _validate, apply_overrides, read_yaml
    from transferkit.config import RunConfig
    from transferkit.recipes import finetune
    from transferkit.recipes.curve import _open_curve_folder

    source = str(config)
    raw, fs = split_fewshot(apply_overrides(read_yaml(config), overrides), source)
    if shots:
        fs.shots = shots
    if seeds:
        fs.seeds = seeds
    if methods:
        fs.methods = methods
        split_fewshot({"fewshot": fs.model_dump()}, source)  # the names, checked
    needs_mlm = [m for m in fs.methods if m == "prompt" or m.startswith("zero_shot_cloze")]
    if needs_mlm and not fs.mlm:
        log.warning("no fewshot.mlm: skipping %s (they need a masked LM with a trained head)", needs_mlm)
        fs.methods = [m for m in fs.methods if m not in needs_mlm]
    base = _validate(json.loads(json.dumps(raw)), RunConfig, source)
    root = base.run_dir
    _open_curve_folder(root, kind="fewshot")
    path = root / "fewshot.jsonl"
    done = {(r["method"], r["k"], r["seed"]) for r in _rows(path)}
    # every run's config is checked before the first one trains
    plan = [(m, k, s) for k in fs.shots for s in fs.seeds for m in fs.methods if m in METHODS]
    for m, k, s in plan[:len(fs.methods)]:
        _validate(apply_overrides(json.loads(json.dumps(raw)), method_overrides(fs, m, k, s, "check", root)),
                  RunConfig, source)
    if any(m in ZERO_SHOT for m in fs.methods) and ("majority", 0, 0) not in done:
        for row in zero_shot_rows(raw, fs, source):
            _append(path, row)
    for i, (m, k, s) in enumerate(plan):
        if (m, k, s) in done:
            continue
        name = f"{m}_k{k}_s{s}"
        cfg = _validate(apply_overrides(json.loads(json.dumps(raw)), method_overrides(fs, m, k, s, name, root / "runs")),
                        RunConfig, source)
        log.info("few-shot %d/%d: %s", i + 1, len(plan), name)
        t0 = time.perf_counter()
        summary = finetune.run(cfg, overwrite=True, progress=progress)
        test = summary["test"]
        _append(path, {"method": m, "k": k, "seed": s, "accuracy": test["accuracy"], "macro_f1": test["macro_f1"],
                       "wall_s": time.perf_counter() - t0, "train_s": summary["train"]["seconds"],
                       "steps": summary["train"]["steps"], "model": cfg.model.path})
    result = summarize(_rows(path), fs.shots)
    result["name"], result["folder"] = base.name, str(root)
    (root / "fewshot.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    write_table(result, root / "fewshot.md", root / "fewshot.png")
    return result


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarize(rows: list[dict[str, Any]], shots: list[int]) -> dict[str, Any]:
    """method -> k -> accuracy / macro-F1 / wall-time statistics over seeds; zero-shot methods at k = 0."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        out[method] = {}
        for k in sorted({r["k"] for r in mine}):
            at = [r for r in mine if r["k"] == k]
            out[method][str(k)] = {"accuracy": _stats([r["accuracy"] for r in at]),
                                   "wall_s": _stats([r["wall_s"] for r in at]),
                                   **({"macro_f1": _stats([r["macro_f1"] for r in at])}
                                      if all(r.get("macro_f1") is not None for r in at) else {})}
    return {"shots": shots, "results": out}


def write_table(result: dict[str, Any], md: Path, png: Path) -> None:
    from transferkit.evaluation.report import _plt

    res, shots = result["results"], result["shots"]
    head = "| method | " + " | ".join(f"k={k}" for k in shots) + " | wall s per run (median k) |"
    lines = ["Test accuracy, mean ± std over seeds (n in brackets); zero-shot methods use no training example.", "",
             head, "|" + "---|" * (len(shots) + 2)]
    for method, by_k in res.items():
        if "0" in by_k:
            a = by_k["0"]["accuracy"]
            cells = [f"{a['mean']:.4f}"] * len(shots)
            wall = by_k["0"]["wall_s"]["mean"]
        else:
            cells = [f"{by_k[str(k)]['accuracy']['mean']:.4f} ± {by_k[str(k)]['accuracy']['std']:.4f} "
                     f"({by_k[str(k)]['accuracy']['n']})" if str(k) in by_k else "-" for k in shots]
            walls = [by_k[str(k)]["wall_s"]["mean"] for k in shots if str(k) in by_k]
            wall = statistics.median(walls) if walls else float("nan")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {wall:.0f} |")
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for method, by_k in res.items():
        if "0" in by_k:
            ax.axhline(by_k["0"]["accuracy"]["mean"], ls="--", lw=1, label=method,
                       color="#999" if method == "majority" else None)
            continue
        ks = [k for k in shots if str(k) in by_k]
        mean = [by_k[str(k)]["accuracy"]["mean"] for k in ks]
        std = [by_k[str(k)]["accuracy"]["std"] for k in ks]
        ax.errorbar(ks, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.minorticks_off()
    ax.set_xlabel("labelled examples per class (k)")
    ax.set_ylabel("test accuracy")
    ax.set_title(result.get("name", "few-shot"))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
