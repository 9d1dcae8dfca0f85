"""Robustness of plain vs adversarially trained models (issue 17): the main job's data and recipe, three ways
(plain fine-tuning, + FGM, + PGD, each with the setting chosen on validation in docs/methods.md), then the
CheckList tables and the greedy word-substitution attack of `transferkit evaluate --suite robustness` on each,
with the same test sample, seed and attack candidates. Resumable: a finished run folder is not trained again.

    python bench/trust_attack.py run                      # all 10,200 labels (~25 min plain, ~1 h FGM, ~2 h PGD at 1 thread)
    python bench/trust_attack.py run --labels 500         # the 500-label setting of docs/methods.md (minutes)
    python bench/trust_attack.py summarize                # -> bench/results/trust_attack[_500].md
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "trust_attack"
RESULTS = ROOT / "bench" / "results"

#: variant -> overrides on configs/sentiment.yaml (which trains with FGM epsilon 0.5 at lr 1e-4)
VARIANTS = {
    "plain": ["methods={}"],
    "fgm": ["methods={}", "methods.fgm.epsilon=0.5"],
    "pgd": ["methods={}", "methods.pgd.epsilon=0.5"],
}
SMALL = ["data.train_limit=500", "train.batch_size=16", "train.epochs=10", "early_stopping.patience=3",
         "train.optimizer.lr=3e-5"]  # the rt500 study's recipe and chosen learning rate (docs/methods.md)


def cpu() -> str:
    sys.path.insert(0, str(ROOT / "bench"))
    from methods_table import cpu_name

    return cpu_name()


def _suffix(labels: int | None) -> str:
    return f"_{labels}" if labels else ""


def run(args: argparse.Namespace) -> None:
    for name, over in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        run_name = f"{name}{_suffix(args.labels)}"
        folder = WORK / run_name
        if not (folder / "metrics.json").is_file():
            cmd = [sys.executable, "-m", "transferkit.cli", "finetune", "configs/sentiment.yaml", *over,
                   f"name={run_name}", f"output.dir={WORK}/{{name}}", "registry.enabled=false", "--overwrite", "-q",
                   *(SMALL if args.labels == 500 else [f"data.train_limit={args.labels}"] if args.labels else [])]
            subprocess.run(cmd, check=True, cwd=ROOT)
        trust = folder / "trust" / "trust.json"
        if not trust.is_file() or "robustness" not in json.loads(trust.read_text()):
            subprocess.run([sys.executable, "-m", "transferkit.cli", "evaluate", str(folder), "--suite",
                            "robustness", "--seed", "0", "--attack-candidates", "synonyms"], check=True, cwd=ROOT)


def summarize(args: argparse.Namespace) -> None:
    """Rows of the variants trained here, merged into bench/results/trust_attack[_N].jsonl (rows measured in
    earlier sessions are kept, with the machine they were measured on), then the table."""
    store = RESULTS / f"trust_attack{_suffix(args.labels)}.jsonl"
    rows = {r["training"]: r for r in map(json.loads, store.read_text().splitlines())} if store.is_file() else {}
    for name in VARIANTS:
        folder = WORK / f"{name}{_suffix(args.labels)}"
        if not (folder / "trust" / "trust.json").is_file():
            continue
        m = json.loads((folder / "metrics.json").read_text())
        r = json.loads((folder / "trust" / "trust.json").read_text())["robustness"]
        inv = r["invariance"]
        a = r.get("attack", {})
        rows[name] = {"training": name, "test_accuracy": m["test"]["accuracy"], "typo_flip": inv["typo"]["flip_rate"],
                      "synonym_flip": inv["synonym"]["flip_rate"], "attack_success": a.get("success_rate"),
                      "queries": a.get("queries_mean"), "accuracy_under_attack": a.get("accuracy_under_attack"),
                      "machine": cpu()}
    store.write_text("".join(json.dumps(rows[k]) + "\n" for k in VARIANTS if k in rows), encoding="utf-8")

    def f(v: float | None, d: int = 4) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    lines = [f"| {r['training']} | {f(r['test_accuracy'])} | {f(r['typo_flip'])} | {f(r['synonym_flip'])} | "
             f"{f(r['attack_success'])} | {f(r['queries'], 1)} | {f(r['accuracy_under_attack'])} | {r['machine']} |"
             for k in VARIANTS if k in rows for r in [rows[k]]]
    text = "\n".join([f"# Plain vs adversarial training under attack ({args.labels or 'all'} labels)", "",
                      "`python bench/trust_attack.py run" + (f" --labels {args.labels}" if args.labels else "") +
                      "` then `summarize`: the main job's recipe three ways, `transferkit evaluate --suite robustness` "
                      "on each (500 test texts, seed 0, WordNet candidates, 200 attacked).", "",
                      "| training | test accuracy | typo flip rate | synonym flip rate | attack success | queries "
                      "| accuracy under attack | machine |", "|---|---|---|---|---|---|---|---|", *lines, ""])
    out = RESULTS / f"trust_attack{_suffix(args.labels)}.md"
    out.write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["run", "summarize"])
    p.add_argument("--labels", type=int, default=None, help="training labels (default: all 10,200; 500: the "
                   "500-label recipe of docs/methods.md)")
    p.add_argument("--only", type=lambda s: s.split(","), default=None, help="e.g. plain,fgm")
    args = p.parse_args()
    (run if args.action == "run" else summarize)(args)


if __name__ == "__main__":
    main()
