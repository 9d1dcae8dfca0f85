"""Learning curve: what pretraining buys as the number of labels grows.

For each label count and seed, one fine-tuning run (a stratified sample of the training split; validation
and test unchanged) of the configured model, and of the same architecture from random initialisation with
the same budget (compare.scratch). Optionally a second pretrained model (`--vs`, e.g. the original
checkpoint against a domain-adapted one). Results: curve.json, curve.md (mean +- std over seeds) and
curve.png in the output folder. Finished runs are reused, so an interrupted curve resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

from transferkit.config import RunConfig
from transferkit.recipes import finetune

log = logging.getLogger(__name__)


def _one(cfg: RunConfig, n: int, seed: int, tag: str, path: str | None, scratch: bool, root: Path,
         progress: bool) -> dict[str, Any]:
    name = f"{tag}_n{n or 'all'}_s{seed}"
    run_dir = root / name
    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    c = cfg.model_copy(deep=True)
    c.name = name
    c.output.dir = str(run_dir)
    if path:
        c.model.path = path
    c.data.train_limit = n or None
    c.data.train_sample_seed = seed
    c.train.seed = seed
    c.compare.scratch = scratch
    c.compare.linear_probe = False
    log.info("learning curve: %s", name)
    return finetune.run(c, overwrite=True, progress=progress)


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def _open_curve_folder(root: Path, kind: str = "curve") -> None:
    """A curve folder holds its runs and its results; it is created here, or it is one that transferkit
    made (a curve is resumed by rerunning it). Any other folder is refused, never written into."""
    import re

    from transferkit.recipes import rundir
    from transferkit.training.checkpoint import atomic_write_text

    rundir.check_writable(root)
    if root.is_dir() and any(root.iterdir()):
        marker = rundir.read_marker(root)
        ours = re.compile(r"(main|vs)_n(\d+|all)_s-?\d+$|curve\.(json|md|png)$")
        legacy = kind == "curve" and all(ours.match(p.name) for p in root.iterdir())
        if not (marker and marker.get("kind") == kind) and not legacy:
            raise rundir.RunFolderError(
                f"'{root}' exists and is not a transferkit {kind} folder (no {rundir.MARKER} file); it holds "
                f"{rundir.describe_entries(list(root.iterdir()))}. Choose another name (name=...) or output.dir.")
    root.mkdir(parents=True, exist_ok=True)
    if not (root / rundir.MARKER).is_file():
        atomic_write_text(root / rundir.MARKER, json.dumps({"kind": kind}))


def run_curve(cfg: RunConfig, sizes: list[int], seeds: list[int], *, vs: str | None = None,
              scratch: bool = True, progress: bool = True, seeds_all: list[int] | None = None) -> dict[str, Any]:
    """`seeds_all`: the seeds of the 'all labels' point (0 in `sizes`), when fewer than `seeds` are affordable."""
    root = cfg.run_dir
    _open_curve_folder(root)
    metric = "accuracy"
    rows: dict[str, dict[str, dict[str, float]]] = {}
    train_sizes: dict[str, int] = {}
    for n in sizes:
        key = str(n or "all")
        acc: dict[str, list[float]] = {}
        for seed in (seeds_all or seeds) if n == 0 else seeds:
            s = _one(cfg, n, seed, "main", None, scratch, root, progress)
            metric = s["metric"]
            train_sizes[key] = s["data"]["sizes"]["train"]
            acc.setdefault(cfg.model.path, []).append(s["transfer"]["fine_tuned"][metric])
            if scratch:
                acc.setdefault("scratch", []).append(s["transfer"]["scratch"][metric])
            if vs:
                v = _one(cfg, n, seed, "vs", vs, False, root, progress)
                acc.setdefault(vs, []).append(v["transfer"]["fine_tuned"][metric])
        rows[key] = {model: _stats(vals) for model, vals in acc.items()}
    result = {"name": cfg.name, "metric": metric, "seeds": seeds, "seeds_all": seeds_all, "sizes": sizes, "train_sizes": train_sizes,
              "results": rows}
    (root / "curve.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    write_curve(result, root)
    return result


def write_curve(result: dict[str, Any], root: Path) -> None:
    from transferkit.evaluation.report import _plt

    rows = result["results"]
    models = list(next(iter(rows.values())))
    metric = result["metric"]
    head = "| labels | " + " | ".join(models) + " | gain over scratch |" if "scratch" in models else \
        "| labels | " + " | ".join(models) + " |"
    lines = [f"Test {metric}, mean ± std over seeds {result['seeds']}" + (
             f" ({result['seeds_all']} for all labels)" if result.get("seeds_all") else "") + ".", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for key, r in rows.items():
        cells = [f"{r[m]['mean']:.4f} ± {r[m]['std']:.4f}" for m in models]
        if "scratch" in models:
            first = models[0]
            cells.append(f"{r[first]['mean'] - r['scratch']['mean']:+.4f}")
        lines.append(f"| {result['train_sizes'].get(key, key)} | " + " | ".join(cells) + " |")
    (root / "curve.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    xs = [result["train_sizes"].get(k, 0) for k in rows]
    for i, m in enumerate(models):
        label = "same architecture, random init" if m == "scratch" else f"pretrained: {m}"
        ax.errorbar(xs, [rows[k][m]["mean"] for k in rows], yerr=[rows[k][m]["std"] for k in rows],
                    marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("labelled training examples")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(result["name"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "curve.png", dpi=110)
    plt.close(fig)
