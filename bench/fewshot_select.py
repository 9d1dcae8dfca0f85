"""Choose the few-shot methods' learning rate and step budget on validation data, never on the test split.

The few-shot benchmark (`transferkit fewshot`) fixes each method's settings once, for every k and seed. This
script is where those settings come from: for each method, learning rate and k it trains on samples drawn
with *development* seeds (101, 102, ... : none of them is a benchmark seed 1-10), evaluates every few steps on
a validation sample of `--val-per-class` examples per class (drawn from the validation split, disjoint from
training and test), and writes the validation curves. `summarize` averages them over the seeds and prints,
per method and k, the learning rate and step count with the best mean validation accuracy.

The validation sample is larger than a few-shot user's (k per class): it is used once, to choose the
benchmark's fixed settings, not per run; every benchmark run then sees only its k-per-class validation.

    python bench/fewshot_select.py configs/fewshot_rt.yaml run --methods full,full_desc --lrs 2e-5,5e-5,1e-4
    python bench/fewshot_select.py configs/fewshot_rt.yaml summarize
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def out_path(config: Path) -> Path:
    return RESULTS / f"fewshot_select_{config.stem.removeprefix('fewshot_')}.jsonl"


def run(args: argparse.Namespace) -> None:
    from transferkit.config import RunConfig, _validate, apply_overrides, read_yaml
    from transferkit.recipes import finetune
    from transferkit.recipes.fewshot import method_overrides, split_fewshot

    raw, fs = split_fewshot(read_yaml(args.config), str(args.config))
    if args.mlm:
        fs.mlm = args.mlm
    path = out_path(args.config)
    done = set()
    if path.is_file():
        done = {(r["method"], r["k"], r["seed"], r["lr"]) for r in map(json.loads, path.read_text().splitlines())}
    work = Path(args.work)
    for k in args.shots:
        for method in args.methods:
            for lr in args.lrs:
                for seed in args.dev_seeds:
                    if (method, k, seed, lr) in done:
                        continue
                    name = f"{method}_k{k}_s{seed}_lr{lr:g}"
                    over = [o for o in method_overrides(fs, method, k, seed, name, work)
                            if not o.startswith(("train.max_steps=", "train.eval_every=", "train.optimizer.lr=",
                                                 "data.validation_per_class="))]
                    over += [f"train.max_steps={args.max_steps}", f"train.eval_every={args.eval_every}",
                             f"train.optimizer.lr={lr}", f"data.validation_per_class={args.val_per_class}"]
                    cfg = _validate(apply_overrides(json.loads(json.dumps(raw)), over), RunConfig, str(args.config))
                    t0 = time.perf_counter()
                    finetune.run(cfg, overwrite=True, progress=False)
                    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
                    curve = [[x["step"], x["accuracy"], x["loss"]] for x in lines if x["split"] == "validation"]
                    row = {"method": method, "k": k, "seed": seed, "lr": lr, "curve": curve,
                           "wall_s": round(time.perf_counter() - t0, 1), "val_per_class": args.val_per_class}
                    with path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
                    best = max(curve, key=lambda c: c[1])
                    print(f"{name}: best validation accuracy {best[1]:.4f} at step {best[0]}", flush=True)


def lr_sum(step: int, total: int, warmup_ratio: float = 0.06) -> float:
    """Summed learning-rate multiplier of the first `step` steps of a `total`-step linear schedule with warm-up
    (transformers' get_linear_schedule_with_warmup, as the loop builds it)."""
    warm = int(round(warmup_ratio * total))
    out = 0.0
    for s in range(step):
        out += s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
    return out


def budget(step: int, total: int) -> int:
    """The run length whose whole schedule adds up to the learning rate the selection run had spent by `step`:
    the best step of a long run becomes the budget of a run that ends there (its rate decays to 0 by then)."""
    target = lr_sum(step, total)
    return next(n for n in range(1, 10 * total) if lr_sum(n, n) >= target - 1e-9)


def summarize(args: argparse.Namespace) -> None:
    path = out_path(args.config)
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    curves: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for step, acc, _ in r["curve"]:
            curves[(r["method"], r["k"], r["lr"])][step].append(acc)
    lines = [f"# Few-shot settings chosen on validation ({path.name})", "",
             "Mean validation accuracy over the development seeds, at the best step of each learning rate; "
             "the chosen setting of each method and k in bold.", "",
             "| method | k | lr | seeds | best step | mean val acc | at step 10 | at the last step |", "|---|---|---|---|---|---|---|---|"]
    best_of: dict[tuple, tuple] = {}
    for (method, k, lr), by_step in sorted(curves.items()):
        means = {s: statistics.mean(v) for s, v in by_step.items()}
        step = max(means, key=lambda s: (round(means[s], 4), -s))  # ties: the shorter budget
        n = len(next(iter(by_step.values())))
        last = max(means)
        key = (method, k)
        if key not in best_of or means[step] > best_of[key][1]:
            best_of[key] = (lr, means[step], step, budget(step, last))
        lines.append(f"| {method} | {k} | {lr:g} | {n} | {step} | {means[step]:.4f} | {means.get(10, float('nan')):.4f} "
                     f"| {means[last]:.4f} |")
    lines += ["", "Budget: the length of a run whose whole linear schedule spends the learning rate that the "
              "selection run had spent by its best step (a run that ends at step S has decayed to 0 by then).", "",
              "| method | k | chosen lr | best step (of the long run) | budget (steps) | mean val acc |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {m} | {k} | **{lr:g}** | {s} | **{b}** | {a:.4f} |" for (m, k), (lr, a, s, b) in sorted(best_of.items())]
    text = "\n".join(lines) + "\n"
    path.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path)
    p.add_argument("action", choices=["run", "summarize"])
    p.add_argument("--methods", type=lambda s: s.split(","), default=["full", "full_desc"])
    p.add_argument("--lrs", type=lambda s: [float(x) for x in s.split(",")], default=[2e-5, 5e-5, 1e-4])
    p.add_argument("--shots", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64])
    p.add_argument("--dev-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[101, 102, 103])
    p.add_argument("--max-steps", type=int, default=80)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--val-per-class", type=int, default=100)
    p.add_argument("--mlm", default=None, help="masked LM for the prompt method (default: the config's fewshot.mlm)")
    p.add_argument("--work", default="bench/work/fewshot_select", help="where the (metrics-only) runs go")
    args = p.parse_args()
    (run if args.action == "run" else summarize)(args)


if __name__ == "__main__":
    sys.exit(main())
