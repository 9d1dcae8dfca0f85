"""Pruning trade-off on a run: 0 / 25 / 50 % of attention heads removed (least important first), each with and
without a recovery fine-tune, exported to ONNX; size, speed and validation / test metric per level.

    python bench/prune_table.py bench/work/rtall/full_a1fefc_s1 --recover-epochs 1
    python bench/prune_table.py RUN --levels 0,0.25,0.5 --ffn 0

Each level is `transferkit export RUN --prune-heads H [--recover-epochs E]` (the same code path); the test
metric is read from the export folder with Predictor on the run's test split (never used for a choice).
Writes bench/results/prune.json, prune.md and prune.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--levels", default="0,0.25,0.5")
    ap.add_argument("--ffn", type=float, default=0.0, help="fraction of FFN neurons removed at every level > 0")
    ap.add_argument("--recover-epochs", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "bench/results"))
    a = ap.parse_args()

    from transferkit.config import load_config
    from transferkit.data.prepare import load_splits
    from transferkit.deploy.predictor import Predictor
    from transferkit.evaluation.evaluate import evaluate
    from transferkit.recipes.export import export
    from transferkit.recipes.rundir import CONFIG

    run = Path(a.run)
    work = HERE / "bench/work/prune"
    rows = []
    for level in [float(x) for x in a.levels.split(",")]:
        for recover in ([0.0] if level == 0 else [0.0, a.recover_epochs]):
            dest = work / f"h{int(level * 100)}_r{recover:g}"
            m = export(run, dest, prune_heads=level, prune_ffn=a.ffn if level > 0 else 0.0, recover_epochs=recover,
                       repeats=a.repeats, progress=False)
            pred = Predictor.load(dest)
            cfg = load_config(run / CONFIG)
            test = load_splits(cfg.data, getattr(pred.task, "read", None)).test
            enc = pred.task.encode(pred.tokenizer, test)
            test_metric = evaluate(pred.task, pred.model, enc, batch_size=32)[0][m["metric"]]
            v = m["variants"]["onnx"]
            p = m.get("pruning") or {}
            rows.append({"heads_removed": level, "recover_epochs": recover, "heads": p.get("heads_after"),
                         "parameters": p.get("params_after", m["variants"]["pytorch"]["parameters"]),
                         "onnx_mb": v["size_mb"], "examples_per_s": v["examples_per_s"],
                         "validation": v[m["metric"]], "test": test_metric, "metric": m["metric"]})
            print(rows[-1], flush=True)
    base = rows[0]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prune.json").write_text(json.dumps({"run": str(run), "machine": f"{cpu}, {os.cpu_count()} cores",
                                                "ffn": a.ffn, "rows": rows}, indent=2))
    metric = base["metric"]
    md = [f"# Pruning attention heads of {run.name}", "",
          f"`python bench/prune_table.py {a.run} --recover-epochs {a.recover_epochs:g}` on {cpu}, {os.cpu_count()} "
          f"cores; ONNX fp32, batch 32, validation split for speed (median of {a.repeats}); FFN neurons removed at "
          f"each level > 0: {a.ffn:.0%}.", "",
          f"| heads removed | recovery epochs | heads left | parameters | ONNX MB | examples/s | speed vs 0% | "
          f"validation {metric} | test {metric} |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['heads_removed']:.0%} | {r['recover_epochs']:g} | {r['heads'] or '-'} | {r['parameters']:,} | "
                  f"{r['onnx_mb']:.1f} | {r['examples_per_s']:.0f} | {r['examples_per_s'] / base['examples_per_s']:.2f}x | "
                  f"{r['validation']:.4f} | {r['test']:.4f} |")
    (out / "prune.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for rec, style in ((0.0, "o--"), (a.recover_epochs, "s-")):
        pts = [r for r in rows if r["recover_epochs"] == rec or r["heads_removed"] == 0]
        ax.plot([r["examples_per_s"] / base["examples_per_s"] for r in pts], [r["test"] for r in pts], style,
                label=f"{'no recovery' if rec == 0 else f'{rec:g} epoch recovery'}")
        for r in pts:
            ax.annotate(f"{r['heads_removed']:.0%}", (r["examples_per_s"] / base["examples_per_s"], r["test"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("speed vs unpruned (ONNX fp32)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title("Attention heads removed: speed vs accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "prune.png", dpi=120)


if __name__ == "__main__":
    main()
