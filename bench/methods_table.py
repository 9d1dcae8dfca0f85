"""What each fine-tuning method buys: every variant of a study, its settings chosen on validation only, then
mean ± std over seeds on the test split; trainable %, seconds per epoch, peak RSS.

    python bench/methods_table.py --study rt500 run            # select on validation, then report (resumable)
    python bench/methods_table.py --study rt500 run --only lora,full
    python bench/methods_table.py --study rtall run --seeds 1   # selection only; the other seeds later
    python bench/methods_table.py --study rt500 summarize      # table + plot from what has been measured
    python bench/methods_table.py --study rt_imbalanced run    # positives cut to 1:9: the imbalance methods
    python bench/methods_table.py --study rt500 timing         # s/epoch and RSS of each chosen setting, alone

A file bench/work/PAUSE makes a running sweep wait before its next run (to measure something else alone).

Each run is one `transferkit finetune` process (so its peak RSS is its own) on configs/sentiment.yaml with
the study's overrides. Selection: every grid point of a variant with the first seed; the point with the best
validation score (the early-stopping metric at its best epoch: accuracy, or macro-F1 for the imbalanced
study) is the setting; ties go to the first point.
The test split is read only for the report, never for a choice. Variants marked `inherit` take the chosen
learning rate of another variant (the combinations take full fine-tuning's) before their own grid.

Results are appended to bench/results/methods_<study>.jsonl as they come (a stopped sweep continues where it
stopped: finished runs are skipped); `summarize` writes methods_<study>.md and .png.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"
WORK = HERE / "bench" / "work"

LR = "train.optimizer.lr"
#: the main job before it took FGM (lr 5e-5, no method): what every study's variants start from
PLAIN = ["methods={}", "train.optimizer.lr=5e-5"]

#: study -> base overrides, seeds, variants. Each variant: "set" (fixed overrides), "grid" (override -> values,
#: chosen on validation), optionally "inherit" (a variant whose chosen settings it starts from).
STUDIES: dict[str, dict] = {
    "rt500": {
        "title": "Rotten Tomatoes, 500 training labels",
        "base": ["data.train_limit=500", "train.batch_size=16", "train.epochs=10", "early_stopping.patience=3",
                 "compare.linear_probe=false", "compare.majority=true"],
        "seeds": [1, 2, 3],
        "variants": {
            "full": {"label": "full fine-tuning", "grid": {LR: [3e-5, 1e-4]}},
            "head_only": {"label": "head only", "set": ["freeze.mode=all_but_head"],
                          "grid": {LR: [1e-3, 1e-2], "task.pooling": ["cls", "mean"]}},
            "lora": {"label": "LoRA r=8 (all linear)",
                     "set": ["methods.lora.r=8", "methods.lora.target_modules=all-linear"],
                     "grid": {LR: [5e-4, 2e-3]}},
            # with q, v only and lr 5e-4 / 2e-3 AdaLoRA stayed at the majority class for 10 epochs on 3 seeds (its E
            # starts at zero and A, B at std 0.02, so the update grows slowly): all linear layers, higher rates
            "adalora": {"label": "AdaLoRA (all linear)", "set": ["methods.adalora.target_r=8", "methods.adalora.init_r=12",
                                                  "methods.adalora.target_modules=all-linear"],
                        "grid": {LR: [2e-3, 1e-2]}},
            "ia3": {"label": "IA3", "set": ["methods.ia3.target_modules=default"], "grid": {LR: [3e-3, 1e-2]}},
            "prompt_tuning": {"label": "prompt tuning (20 tokens)", "set": ["methods.prompt_tuning.tokens=20"],
                              "grid": {LR: [3e-3, 3e-2]}},
            "llrd": {"label": "+ layer-wise decay", "inherit": "full", "grid": {"methods.layerwise_lr.decay": [0.8, 0.9]}},
            "gu": {"label": "+ gradual unfreezing", "inherit": "full",
                   "grid": {"methods.gradual_unfreezing.every": [16, 32]}},
            "fgm": {"label": "+ FGM", "inherit": "full", "grid": {"methods.fgm.epsilon": [0.5, 1.0]}},
            "pgd": {"label": "+ PGD", "inherit": "full", "grid": {"methods.pgd.epsilon": [0.5, 1.0]}},
            "freelb": {"label": "+ FreeLB", "inherit": "full", "grid": {"methods.freelb.adv_lr": [0.03, 0.1]}},
            "eda": {"label": "+ EDA", "inherit": "full", "grid": {"methods.eda.copies": [1, 4]}},
            "mlm_sub": {"label": "+ MLM substitution", "inherit": "full",
                        "set": ["methods.mlm_substitution.model=bench/work/mlm_en/model"],
                        "grid": {"methods.mlm_substitution.copies": [1, 2]}},
            # issue 13: MiniLM continued on review text (the same MLM, 3 epochs with 100 head-only warm-up steps)
            "dapt": {"label": "domain-adaptive MLM start (bench/work/mlm_en)", "inherit": "full",
                     "set": ["model.path=bench/work/mlm_en/model"]},
        },
    },
}


STUDIES["rtall"] = {
    "title": "Rotten Tomatoes, all 10,200 training labels",
    "base": ["train.batch_size=32", "train.epochs=3", "early_stopping.patience=2", "compare.linear_probe=false"],
    "seeds": [1, 2, 3],
    "variants": {
        "full": {"label": "full fine-tuning", "grid": {LR: [3e-5, 5e-5, 1e-4]}},
        "lora": {"label": "LoRA r=8 (all linear)",
                 "set": ["methods.lora.r=8", "methods.lora.target_modules=all-linear"], "grid": {LR: [5e-4, 1e-3]}},
        # the best two combinations at 500 labels, each with the setting chosen there on validation
        "fgm": {"label": "+ FGM", "inherit": "full", "grid": {"methods.fgm.epsilon": [0.5]}},
        "gu": {"label": "+ gradual unfreezing", "inherit": "full", "grid": {"methods.gradual_unfreezing.every": [16]}},
        # the two together, for the main job's target (>= 0.86): each at its own setting above
        "fgm_gu": {"label": "+ FGM + gradual unfreezing", "inherit": "full",
                   "set": ["methods.fgm.epsilon=0.5", "methods.gradual_unfreezing.every=16"]},
    },
}

IMBALANCED = WORK / "rt_imbalanced.csv"
STUDIES["rt_imbalanced"] = {
    "title": "Rotten Tomatoes with positives cut to 1:9 (2,000 training labels)",
    "data": "make_imbalanced",
    "minority": "positive",
    "base": [f"data.source={IMBALANCED}", "data.train_limit=2000", "train.batch_size=16", "train.epochs=4",
             "early_stopping.metric=macro_f1", "early_stopping.patience=2", "compare.linear_probe=false",
             LR + "=5e-5"],
    "seeds": [1, 2, 3],
    "variants": {
        "plain": {"label": "plain fine-tuning"},
        "class_weights": {"label": "class weights (inverse frequency)", "set": ["methods.class_weights.weights=inverse_frequency"]},
        "focal": {"label": "focal loss", "grid": {"methods.focal_loss.gamma": [1.0, 2.0]}},
        "balanced_sampler": {"label": "balanced sampler", "set": ["methods.balanced_sampler.power=1.0"]},
        "threshold": {"label": "threshold tuning (validation macro-F1)", "set": ["methods.threshold_tuning.metric=macro_f1"]},
    },
}


def make_imbalanced() -> None:
    """All 'negative' snippets and one 'positive' for every nine of them, as a CSV the runs split as usual
    (so validation and test are 1:9 too)."""
    import csv
    import random

    from transferkit.data.builtin import rotten_tomatoes

    if IMBALANCED.exists():
        return
    ds = rotten_tomatoes()
    neg = [t for t, y in zip(ds["text"], ds["label"]) if y == "negative"]
    pos = [t for t, y in zip(ds["text"], ds["label"]) if y == "positive"]
    pos = random.Random(0).sample(pos, len(neg) // 9)
    WORK.mkdir(parents=True, exist_ok=True)
    with IMBALANCED.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows([(t, "negative") for t in neg] + [(t, "positive") for t in pos])


def validation_of(r: dict) -> float:
    return r.get("validation_score", r.get("validation_accuracy"))


def key(variant: str, point: dict, seed: int) -> str:
    return json.dumps([variant, point, seed], sort_keys=True)


def load(path: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "error" not in r:  # a failed run is tried again
                    done[key(r["variant"], r["point"], r["seed"])] = r
    return done


def one(study: str, base: list[str], variant: str, point: dict, fixed: list[str], seed: int) -> dict:
    tag = f"{variant}_{hashlib.md5(json.dumps(point, sort_keys=True).encode()).hexdigest()[:6]}_s{seed}"
    out = WORK / study
    overrides = [*PLAIN, *base, *fixed, *(f"{k}={v}" for k, v in point.items()), f"train.seed={seed}",
                 f"data.train_sample_seed={seed}", f"name={tag}", f"output.dir={out}/{{name}}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "transferkit.cli", "finetune", str(HERE / "configs/sentiment.yaml"), "-q",
           "--overwrite", *overrides]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        return {"variant": variant, "point": point, "seed": seed, "error": (p.stderr or p.stdout)[-2000:],
                "overrides": overrides}
    m = json.loads((out / tag / "metrics.json").read_text())
    tr = m["train"]
    return {"variant": variant, "point": point, "seed": seed, "overrides": overrides,
            "validation_score": tr["best_validation"], "test_accuracy": m["test"]["accuracy"],
            "test_per_class": m["test"]["per_class"], "methods": m["methods"],
            "test_macro_f1": m["test"]["macro_f1"], "trainable_params": tr["trainable_params"],
            "total_params": tr["total_params"], "seconds_per_epoch": tr["seconds"] / max(tr["epochs"], 1e-9),
            "epochs": tr["epochs"], "best_step": tr["best_step"], "peak_rss_mb": tr["peak_rss_mb"],
            "samples_per_s": tr["samples_per_s"], "wall_s": wall,
            "machine": f"{cpu_name()}, {os.cpu_count()} cores"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def grid_points(grid: dict) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]


def chosen(study: dict, name: str, done: dict) -> dict | None:
    """The variant's chosen point (its inherited settings included), by validation accuracy of the first seed."""
    v = study["variants"][name]
    inherited = chosen(study, v["inherit"], done) if "inherit" in v else {}
    if inherited is None:
        return None
    seed = study["seeds"][0]
    best, best_acc = None, -1.0
    for pt in grid_points(v.get("grid", {})):
        full = {**inherited, **pt}
        r = done.get(key(name, full, seed))
        if r is None:
            return None
        if validation_of(r) > best_acc:
            best, best_acc = full, validation_of(r)
    return best


def run(study_name: str, only: list[str] | None, seeds: list[int] | None = None) -> None:
    """Selection on the first seed, then the chosen setting on the other seeds (`seeds`: only those of them)."""
    study = STUDIES[study_name]
    path = RESULTS / f"methods_{study_name}.jsonl"
    names = [n for n in study["variants"] if not only or n in only]

    if study.get("data"):
        globals()[study["data"]]()

    def go(name: str, point: dict, seed: int) -> None:
        while (WORK / "PAUSE").exists():
            time.sleep(10)
        done = load(path)
        if key(name, point, seed) in done:
            return
        v = study["variants"][name]
        print(f"[{time.strftime('%H:%M:%S')}] {name} {point} seed {seed}", flush=True)
        r = one(study_name, study["base"], name, point, v.get("set", []), seed)
        with path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print("   ", {k: r.get(k) for k in ("validation_score", "test_accuracy", "seconds_per_epoch", "error")},
              flush=True)

    # selection: the first seed over each grid (variants that inherit wait for their parent's choice)
    for name in names:
        parents = [name]
        while "inherit" in study["variants"][parents[-1]]:
            parents.append(study["variants"][parents[-1]]["inherit"])
        for p in reversed(parents):  # parent first
            pv = study["variants"][p]
            inherited = chosen(study, pv["inherit"], load(path)) if "inherit" in pv else {}
            if inherited is None:
                break
            for pt in grid_points(pv.get("grid", {})):
                go(p, {**inherited, **pt}, study["seeds"][0])
        best = chosen(study, name, load(path))
        if best is None:
            print(f"{name}: selection incomplete (a run failed); see {path}", flush=True)
            continue
        for seed in study["seeds"][1:]:
            if seeds is None or seed in seeds:
                go(name, best, seed)


def timing(study_name: str, only: list[str] | None) -> None:
    """Seconds per epoch and peak RSS of each variant's chosen setting under the same conditions for every row: one
    process at a time, 2 epochs with validation only at the end, the sweep paused (its own timings share the CPU
    with whatever else runs). OMP_NUM_THREADS is recorded. Appends to methods_<study>_timing.jsonl; summarize
    prefers these figures."""
    study = STUDIES[study_name]
    done = load(RESULTS / f"methods_{study_name}.jsonl")
    path = RESULTS / f"methods_{study_name}_timing.jsonl"
    for name in [n for n in study["variants"] if not only or n in only]:
        best = chosen(study, name, done)
        if best is None:
            continue
        extra = ["train.epochs=2", "train.eval_every=100000", "early_stopping.enabled=false"]
        r = one(study_name, [*study["base"], *extra], name + "_timing", best, study["variants"][name].get("set", []),
                study["seeds"][0])
        r["variant"] = name
        r["threads"] = os.environ.get("OMP_NUM_THREADS", "all")
        with path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(name, {k: r.get(k) for k in ("seconds_per_epoch", "peak_rss_mb", "error")}, flush=True)


def pct_text(pct: float) -> str:
    return f"{pct:.2f}" if pct >= 0.1 else f"{pct:.3f}"


def summarize(study_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    study = STUDIES[study_name]
    done = load(RESULTS / f"methods_{study_name}.jsonl")
    timed: dict[str, dict] = {}
    tpath = RESULTS / f"methods_{study_name}_timing.jsonl"
    if tpath.exists():
        for line in tpath.read_text().splitlines():
            r = json.loads(line)
            if "error" not in r:
                timed[r["variant"]] = r  # the latest measurement of each
    rows = []
    for name, v in study["variants"].items():
        best = chosen(study, name, done)
        if best is None:
            continue
        runs = [done.get(key(name, best, s)) for s in study["seeds"]]
        runs = [r for r in runs if r]
        acc = [r["test_accuracy"] for r in runs]
        f1 = [r["test_macro_f1"] for r in runs]
        minority = study.get("minority")
        rec = [r["test_per_class"][minority]["recall"] for r in runs] if minority else []
        rows.append({"variant": name, "label": v["label"], "setting": best, "n": len(runs),
                     "mean": statistics.mean(acc), "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                     "f1_mean": statistics.mean(f1), "f1_std": statistics.stdev(f1) if len(f1) > 1 else 0.0,
                     "rec_mean": statistics.mean(rec) if rec else None,
                     "rec_std": statistics.stdev(rec) if len(rec) > 1 else 0.0,
                     "val_mean": statistics.mean(validation_of(r) for r in runs),
                     "trainable_pct": 100 * runs[0]["trainable_params"] / runs[0]["total_params"],
                     "s_per_epoch": timed[name]["seconds_per_epoch"] if name in timed else
                     statistics.median(r["seconds_per_epoch"] for r in runs),
                     "rss": timed[name]["peak_rss_mb"] if name in timed else
                     statistics.median(r["peak_rss_mb"] for r in runs), "timed_alone": name in timed,
                     "machines": sorted({r["machine"] for r in runs})})
    machines = sorted({m for r in rows for m in r["machines"]})
    machine = " and ".join(machines) if machines else "?"
    minority = study.get("minority")
    lines = [f"# {study['title']}", "",
             f"Measured by `python bench/methods_table.py --study {study_name} run` on {machine}; settings chosen "
             f"on the validation {'macro-F1' if minority else 'accuracy'} of seed {study['seeds'][0]} (grid in the "
             f"script), then seeds {', '.join(map(str, study['seeds']))} on the test split.", ""]
    if minority:
        lines += [f"| method | chosen setting | test macro-F1 | test recall of '{minority}' | test accuracy | seeds | "
                  "validation macro-F1 |", "|---|---|---|---|---|---|---|"]
    else:
        lines += ["| method | chosen setting | test accuracy (mean ± std) | seeds | validation | trainable % | "
                  "s / epoch | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        setting = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["setting"].items()) or "-"
        if minority:
            lines.append(f"| {r['label']} | {setting} | {r['f1_mean']:.4f} ± {r['f1_std']:.4f} | {r['rec_mean']:.4f} ± "
                         f"{r['rec_std']:.4f} | {r['mean']:.4f} ± {r['std']:.4f} | {r['n']} | {r['val_mean']:.4f} |")
        else:
            lines.append(f"| {r['label']} | {setting} | {r['mean']:.4f} ± {r['std']:.4f} | {r['n']} | {r['val_mean']:.4f} "
                         f"| {pct_text(r['trainable_pct'])} | {r['s_per_epoch']:.1f}{'' if r['timed_alone'] else '*'} "
                         f"| {r['rss']:.0f} |")
    if len(machines) > 1:
        lines += ["", "Runs measured on another machine than the first listed (float results differ between CPUs, "
                  "so compare these rows with care): " + "; ".join(
                      f"{r['label']}: {', '.join(r['machines'])}" for r in rows if r["machines"] != machines[:1])
                  + "."]
    if tpath.exists():
        threads = sorted({str(t.get("threads", "?")) for t in timed.values()})
        lines += ["", f"s / epoch and peak RSS: `timing` runs, 2 epochs of each chosen setting, one run at a time, "
                  f"OMP_NUM_THREADS={'/'.join(threads)} (the conditions beside the run are in docs/methods.md)."]
    if not minority and not all(r["timed_alone"] for r in rows):
        lines += ["", "\\* median over the study's runs, which shared the 2 cores with other work (not comparable "
                  "between rows); figures without \\* were measured alone (`timing`: 2 epochs of the chosen setting)."]
    (RESULTS / f"methods_{study_name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
        ys = range(len(rows))
        val, err = ("f1_mean", "f1_std") if minority else ("mean", "std")
        ax.barh(list(ys), [r[val] for r in rows], xerr=[r[err] for r in rows], color="#4c72b0", alpha=0.85)
        ax.set_yticks(list(ys), [f"{r['label']} ({r['trainable_pct']:.1f}%)" for r in rows])
        ax.invert_yaxis()
        lo = min(r[val] - r[err] for r in rows)
        ax.set_xlim(max(0.0, lo - 0.03), min(1.0, max(r[val] + r[err] for r in rows) + 0.02))
        ax.set_xlabel(f"test {'macro-F1' if minority else 'accuracy'}, mean ± std over seeds")
        ax.set_title(study["title"])
        fig.tight_layout()
        fig.savefig(RESULTS / f"methods_{study_name}.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="rt500", choices=sorted(STUDIES))
    ap.add_argument("action", choices=["run", "timing", "summarize"])
    ap.add_argument("--only", default="", help="comma-separated variants (default: all)")
    ap.add_argument("--seeds", default="", help="run: comma-separated seeds beyond the selection seed (default: all); "
                    "--seeds 1 runs only the selection")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = [s for s in args.only.split(",") if s] or None
    if args.action == "run":
        run(args.study, only, [int(x) for x in args.seeds.split(",") if x] or None)
    elif args.action == "timing":
        timing(args.study, only)
    summarize(args.study)


if __name__ == "__main__":
    main()
