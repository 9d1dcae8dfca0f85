"""What the methods seam costs when no method is enabled: the same fine-tuning run from two source trees
(before the seam and now), alternated A B A B ..., training samples/s from each run's metrics.json.

    git worktree add /tmp/tk_before <commit>      # the tree to compare against
    python bench/seam_overhead.py --before /tmp/tk_before --repeats 3

Settings: the packaged MiniLM, configs/sentiment.yaml without FGM at lr 5e-5 (the main job before it took FGM), 3,000 Rotten Tomatoes training examples (stratified,
seed 42), 1 epoch, batch 32, no linear probe. samples/s counts training time only (evaluation is excluded by
fit()). Writes bench/results/seam_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
OVERRIDES = ["data.train_limit=3000", "train.epochs=1", "compare.linear_probe=false", "early_stopping.enabled=false"]


def plain_config(out: Path) -> Path:
    """The main job as it was before it took FGM (lr 5e-5, no `methods:` section, which the tree before the seam
    does not know)."""
    import yaml

    raw = yaml.safe_load((HERE / "configs/sentiment.yaml").read_text(encoding="utf-8"))
    raw.pop("methods", None)
    raw["train"]["optimizer"]["lr"] = 5e-5
    path = out / "sentiment_plain.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def one(tree: Path, out: Path, tag: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "transferkit.cli", "finetune", str(plain_config(out)), f"name={tag}",
           f"output.dir={out}/{{name}}", "-q", *OVERRIDES]
    subprocess.run(cmd, check=True, env=env, cwd=tree, capture_output=True, text=True)
    m = json.loads((out / tag / "metrics.json").read_text())
    return {"samples_per_s": m["train"]["samples_per_s"], "test_accuracy": m["test"]["accuracy"],
            "peak_rss_mb": m["train"]["peak_rss_mb"], "steps": m["train"]["steps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="source tree without the seam")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rev = lambda tree: subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],  # noqa: E731
                                      capture_output=True, text=True).stdout.strip()
    runs: dict[str, list[dict]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, tree in (("before", args.before), ("now", HERE)):
                res = one(tree, Path(tmp), f"{name}{r}")
                runs[name].append(res)
                print(name, r, res, flush=True)
    med = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in runs.items()}
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "before": rev(args.before), "now": rev(HERE), "overrides": OVERRIDES, "runs": runs,
              "median_samples_per_s": med, "ratio_now_over_before": med["now"] / med["before"]}
    out = HERE / "bench/results"
    (out / "seam_overhead.json").write_text(json.dumps(result, indent=2))
    lines = ["| tree | commit | samples/s (median of %d) | test accuracy | peak RSS MB |" % args.repeats,
             "|---|---|---|---|---|"]
    for k in ("before", "now"):
        v = runs[k]
        lines.append(f"| {k} | {result[k]} | {med[k]:.1f} | {statistics.median(x['test_accuracy'] for x in v):.4f} | "
                     f"{statistics.median(x['peak_rss_mb'] for x in v):.0f} |")
    lines.append(f"\nnow / before: {result['ratio_now_over_before']:.3f}")
    (out / "seam_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
