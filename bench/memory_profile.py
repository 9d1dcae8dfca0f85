"""Where a fine-tuning run's memory goes, phase by phase (issue 19).

    python bench/memory_profile.py configs/sentiment.yaml train.epochs=1
    python bench/memory_profile.py configs/sentiment.yaml train.epochs=1 --allocator jemalloc
    python bench/memory_profile.py configs/qa_bbc.yaml --name qa

Runs `transferkit finetune` in this process while a thread samples the resident set size (RSS, from
/proc/self/status) every 20 ms. The phases are marked by wrapping the functions that make them: imports, data
(read, de-duplicate, split), tokenize (Task.encode), model (build), baselines (majority, linear probe),
train (fit minus its evaluations), evaluate (validation and test inference), save (model folder), report.
Writes bench/results/memory_<name>.json (per phase: RSS at start, peak, at end, and the peak's growth over the
phase's start) and memory_<name>.png (RSS over time, coloured by phase).

`--allocator jemalloc` re-runs the script with Debian's libjemalloc2 preloaded (apt-get install libjemalloc2):
glibc's malloc keeps freed blocks of the many differently shaped tensors of dynamic padding; jemalloc returns
more of them to the system.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Profile:
    def __init__(self) -> None:
        self.samples: list[tuple[float, float, str]] = []
        self.phase = "imports"
        self.t0 = time.perf_counter()
        self.stack: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_mb(), self.phase))
            self._stop.wait(0.02)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()

    @contextlib.contextmanager
    def mark(self, name: str):
        self.stack.append(self.phase)
        self.phase = name
        self.samples.append((time.perf_counter() - self.t0, rss_mb(), name))
        try:
            yield
        finally:
            self.samples.append((time.perf_counter() - self.t0, rss_mb(), name))
            self.phase = self.stack.pop()

    def wrap(self, module: object, attr: str, name: str) -> None:
        fn = getattr(module, attr)
        prof = self

        def wrapped(*a, **kw):
            if prof.phase == name:  # nested calls of the same phase
                return fn(*a, **kw)
            with prof.mark(name):
                return fn(*a, **kw)

        setattr(module, attr, wrapped)

    def table(self) -> list[dict[str, float | str]]:
        """Phases in order of first appearance: RSS at start, peak, end, and peak growth."""
        rows: dict[str, dict[str, float | str]] = {}
        prev = 0.0
        for t, r, p in self.samples:
            row = rows.get(p)
            if row is None:
                rows[p] = row = {"phase": p, "start_mb": prev, "peak_mb": r, "end_mb": r, "seconds": 0.0, "_t": t}
            row["peak_mb"] = max(float(row["peak_mb"]), r)
            row["end_mb"] = r
            row["seconds"] = t - float(row["_t"])
            prev = r
        out = []
        for row in rows.values():
            row.pop("_t")
            row["growth_mb"] = float(row["peak_mb"]) - float(row["start_mb"])
            out.append({k: (round(v, 1) if isinstance(v, float) else v) for k, v in row.items()})
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--name", default=None, help="results file stem (default: the config's name)")
    ap.add_argument("--allocator", choices=["glibc", "jemalloc"], default="glibc")
    args = ap.parse_args()
    if args.allocator == "jemalloc" and JEMALLOC not in os.environ.get("LD_PRELOAD", ""):
        if not Path(JEMALLOC).is_file():
            sys.exit(f"{JEMALLOC} is missing: apt-get install libjemalloc2")
        env = {**os.environ, "LD_PRELOAD": JEMALLOC}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    prof = Profile()
    prof.start()
    from transferkit.config import load_config
    from transferkit.data import prepare
    from transferkit.evaluation import compare, evaluate, report
    from transferkit.deploy import predictor
    from transferkit.recipes import finetune
    from transferkit.tasks import classification
    from transferkit.training import loop

    prof.phase = "config"
    cfg = load_config(args.config, [*args.overrides, "registry.enabled=false", "name=memory_profile",
                                    "output.dir=bench/work/{name}"])
    # the phases: the functions that make them, wrapped where finetune looks them up
    prof.wrap(finetune, "load_splits", "data")
    prof.wrap(finetune, "_build_model", "model")
    for task_cls in (classification.ClassificationTask,):
        prof.wrap(task_cls, "encode", "tokenize")
    prof.wrap(compare, "linear_probe", "baselines")
    prof.wrap(compare, "majority_baseline", "baselines")
    prof.wrap(loop, "fit", "train")
    prof.wrap(loop, "evaluate", "evaluate")
    prof.wrap(evaluate, "evaluate", "evaluate")
    prof.wrap(predictor, "save_model", "save")
    prof.wrap(report, "write_report", "report")
    prof.phase = "other"  # time outside the phases above (temperature fitting, metrics.json, ...)
    t = time.perf_counter()
    summary = finetune.run(cfg, overwrite=True, progress=False)
    prof.stop()
    rows = prof.table()
    name = args.name or f"{cfg.name}_{args.allocator}"
    out = ROOT / "bench" / "results"
    peak = max(r for _, r, _ in prof.samples)
    result = {"config": args.config, "overrides": args.overrides, "allocator": args.allocator, "peak_rss_mb": round(peak, 1),
              "seconds": round(time.perf_counter() - t, 1), "test": {k: v for k, v in summary["test"].items()
                                                                    if isinstance(v, (int, float))},
              "phases": rows}
    (out / f"memory_{name}.json").write_text(json.dumps(result, indent=2))
    _plot(prof, out / f"memory_{name}.png", f"{args.config} {' '.join(args.overrides)} ({args.allocator})")
    print(f"peak RSS {peak:.0f} MB; test {result['test']}")
    print(f"{'phase':<12} {'start':>8} {'peak':>8} {'end':>8} {'growth':>8} {'seconds':>8}")
    for r in rows:
        print(f"{r['phase']:<12} {r['start_mb']:>8} {r['peak_mb']:>8} {r['end_mb']:>8} {r['growth_mb']:>8} {r['seconds']:>8}")


def _plot(prof: Profile, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    phases = list(dict.fromkeys(p for _, _, p in prof.samples))
    colors = plt.get_cmap("tab10")
    for i, ph in enumerate(phases):
        pts = [(t, r) for t, r, p in prof.samples if p == ph]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=2, color=colors(i % 10), label=ph)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MB)")
    ax.set_title(title, fontsize=9)
    ax.legend(markerscale=5, fontsize=8, ncol=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
