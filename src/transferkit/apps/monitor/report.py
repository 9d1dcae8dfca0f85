"""`transferkit monitor replay`: push a file (or a built-in) through the monitor as if it arrived in time order,
judge every window, and write what happened: report.md (alerts with their evidence, throughput, the score
distribution of each model) and monitor.png (label shares per window with the alert windows shaded)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transferkit.apps.monitor import ingest as I
from transferkit.apps.monitor.engine import IngestResult, Monitor


def replay(monitor: Monitor, source: str | Path, progress: bool = True) -> dict[str, Any]:
    items = list(I.read(source, monitor.cfg.ingest))
    items.sort(key=lambda t: t.ts)  # in time order, as a live feed would bring them
    res = IngestResult()
    t0 = time.perf_counter()
    step = max(monitor.cfg.ingest.batch_size * 4, 64)
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        bar.start()
        task = bar.add_task("replay", total=len(items))
    try:
        for i in range(0, len(items), step):  # one batch at a time: windows close as the feed moves on
            part = monitor.ingest(items[i:i + step])
            res.merge(part)
            if bar is not None:
                bar.advance(task, len(items[i:i + step]))
    finally:
        if bar is not None:
            bar.stop()
    res.alerts += monitor.advance(monitor.store.watermark(), final=True)
    monitor.notifier.wait(timeout=120)
    seconds = time.perf_counter() - t0
    out = {"source": str(source), "texts": len(items), "stored": res.stored, "duplicates": res.duplicates,
           "seconds": round(seconds, 2), "texts_per_s": round(res.stored / seconds, 1) if seconds and res.stored else None,
           "alerts": [a["id"] for a in res.alerts]}
    write_report(monitor, out)
    return out


def write_report(monitor: Monitor, run: dict[str, Any]) -> Path:
    from transferkit.training.checkpoint import atomic_write_text

    folder = monitor.cfg.folder
    summary = monitor.summary()
    alerts = monitor.store.alerts(limit=10_000)
    plot(summary, alerts, folder / "monitor.png")
    lines = [f"# Monitor `{monitor.cfg.name}`", "",
             f"Replayed `{run['source']}`: {run['texts']} texts, {run['stored']} new ({run['duplicates']} already "
             f"stored), in {run['seconds']} s" + (f" ({run['texts_per_s']} texts/s, classification by "
                                                   f"{len(monitor.classifiers)} model(s) included)."
                                                   if run.get("texts_per_s") else "."),
             f"Windows of {monitor.cfg.window}: {len(summary['windows'])}; judged: {summary['totals']['windows_judged']}.",
             "", "![label shares per window](monitor.png)", "", "## Alerts", ""]
    if not alerts:
        lines.append("No alert fired.")
    else:
        lines += ["| window | rule | label | value | baseline | texts | held (windows) |", "|---|---|---|---|---|---|---|"]
        for a in sorted(alerts, key=lambda a: a["window_start"]):
            share = a["kind"] == "share_rise"
            fmt = (lambda v: f"{100 * v:.1f}%") if share else (lambda v: f"{v:.1f}")
            lines.append(f"| {a['window_start'][:10]} | {a['rule']} | {a['label'] or ''} | {fmt(a['value'])} | "
                         f"{fmt(a['baseline'])} | {a['count']} | {a['windows']} |")
        lines += ["", "### Evidence", ""]
        for a in sorted(alerts, key=lambda a: a["window_start"]):
            lines.append(f"**{a['window_start'][:10]} {a['rule']}**: {a['message']}")
            lines.append("")
            for t in a["evidence"][:5]:
                preds = "; ".join(f"{m} {v['label']} {v['score']:.2f}" for m, v in t["predictions"].items())
                lines.append(f"- {t['time'][:10]} {t['text']} ({preds})")
            lines.append("")
    lines += ["## Scores", "", "Mean confidence of each model's predictions per window (low or falling confidence "
              "is what a domain shift looks like):", ""]
    models = list(summary["models"])
    lines += ["| window | texts | " + " | ".join(f"{m} mean score" for m in models) + " | " +
              " | ".join(f"{m}: {lab}" for m in models for lab in summary["models"][m]) + " |",
              "|---|---|" + "---|" * (len(models) + sum(len(v) for v in summary["models"].values()))]
    for w in summary["windows"]:
        conf = " | ".join(f"{w['confidence'].get(m, 0):.3f}" for m in models)
        shares = " | ".join(f"{100 * w['shares'][m][lab]:.1f}%" for m in models for lab in summary["models"][m])
        lines.append(f"| {w['start'][:10]} | {w['count']} | {conf} | {shares} |")
    atomic_write_text(folder / "report.md", "\n".join(lines) + "\n")
    atomic_write_text(folder / "replay.json", json.dumps(run, indent=2))
    return folder / "report.md"


def plot(summary: dict[str, Any], alerts: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from datetime import datetime

    windows = summary["windows"]
    if not windows:
        return
    models = list(summary["models"])
    fig, axes = plt.subplots(len(models) + 1, 1, figsize=(11, 2.6 * (len(models) + 1)), sharex=True)
    xs = [datetime.fromisoformat(w["start"]) for w in windows]
    for ax, m in zip(axes, models):
        for lab in summary["models"][m]:
            ys = [w["shares"][m][lab] if w["count"] else None for w in windows]
            ax.plot(xs, [float("nan") if y is None else 100 * y for y in ys], marker=".", label=lab)
        ax.set_ylabel(f"{m} share (%)")
        ax.legend(loc="upper left", fontsize=8, ncol=min(5, len(summary["models"][m])))
    axes[-1].bar(xs, [w["count"] for w in windows], width=(xs[1] - xs[0]) * 0.8 if len(xs) > 1 else 1,
                 color="#94a3b8")
    axes[-1].set_ylabel("texts")
    for a in alerts:
        s, e = datetime.fromisoformat(a["window_start"]), datetime.fromisoformat(a["last_window_end"])
        for ax, m in zip(axes, models + [None]):
            if a["model"] in (m, None):
                ax.axvspan(s, e, color="#c0392b", alpha=0.12)
        axes[models.index(a["model"]) if a["model"] in models else -1].annotate(
            a["rule"], (s, 0.97), xycoords=("data", "axes fraction"), fontsize=7, color="#c0392b", va="top")
    axes[0].set_title(f"{summary['window']} windows; shaded: alerts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
