"""The run report: report.md and report.html with the transfer table, test metrics and plots."""

from __future__ import annotations

import base64
import json
import html
from pathlib import Path
from typing import Any

from transferkit.config import minimized

PRIMARY_ORDER = ("majority", "zero_shot_embedding", "zero_shot_cloze", "zero_shot_cloze_calibrated", "linear_probe",
                 "scratch", "fine_tuned")
NAMES = {"majority": "Majority class", "zero_shot_embedding": "Zero-shot: label descriptions by embedding similarity",
         "zero_shot_cloze": "Zero-shot: cloze prompt on the masked LM",
         "zero_shot_cloze_calibrated": "Zero-shot: cloze prompt, contextually calibrated",
         "linear_probe": "Linear probe (frozen pretrained features)",
         "scratch": "Same architecture from scratch", "fine_tuned": "Fine-tuned (transferkit)"}


COLORS = {"majority": "#bbb", "zero_shot_embedding": "#c9b", "zero_shot_cloze": "#c9b",
          "zero_shot_cloze_calibrated": "#a7a", "linear_probe": "#8ab", "scratch": "#db8", "fine_tuned": "#2a7"}


def name_of(summary: dict[str, Any], key: str) -> str:
    """A transfer row's display name; a task may rename its majority baseline (relations: per type pair)."""
    return summary.get("baseline_names", {}).get(key, NAMES[key])


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict[str, Any]], metric: str, path: Path) -> Path | None:
    train = [(h["step"], h["loss"]) for h in history if h["split"] == "train" and "loss" in h]
    val = [h for h in history if h["split"] == "validation"]
    if not train and not val:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if train:
        ax[0].plot(*zip(*train), label="train loss")
    if val:
        ax[0].plot([h["step"] for h in val], [h.get("loss") for h in val], "o-", label="validation loss")
        ax[1].plot([h["step"] for h in val], [h.get(metric) for h in val], "o-", color="tab:green")
    ax[0].set_xlabel("optimizer step")
    ax[0].set_title("loss")
    ax[0].legend()
    ax[1].set_xlabel("optimizer step")
    ax[1].set_title(f"validation {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    import numpy as np

    plt = _plt()
    m = np.asarray(matrix)
    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_transfer(rows: dict[str, dict[str, Any]], metric: str, path: Path, names: dict[str, str] | None = None) -> Path:
    plt = _plt()
    keys = [k for k in PRIMARY_ORDER if k in rows]
    vals = [rows[k][metric] for k in keys]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.barh([(names or {}).get(k, NAMES[k]) for k in keys], vals, color=[COLORS.get(k, "#8ab") for k in keys])
    for b, v in zip(bars, vals):
        ax.text(v, b.get_y() + b.get_height() / 2, f" {v:.3f}", va="center")
    ax.set_xlim(0, 1.08 if max(vals, default=0) <= 1 else 1.15 * max(vals))
    ax.set_xlabel(f"test {metric}" + (" (lower is better)" if minimized(metric) else ""))
    ax.set_title("What the pretrained weights bought")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list[Any]]) -> list[list[str]]:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    return [header] + [[fmt(v) for v in r] for r in rows]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md(t: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_cell, t[0])) + " |", "|" + "---|" * len(t[0])]
    lines += ["| " + " | ".join(map(_cell, r)) + " |" for r in t[1:]]
    return "\n".join(lines)


def _html_table(t: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: the metrics the transfer table shows beside the run's own, when the task reports them (a task may name its
#: own in `transfer_metrics`)
TRANSFER_METRICS = ("macro_f1", "exact_match", "rouge1", "rouge2", "rougeL", "bleu", "chrf")


def transfer_metrics(task: Any) -> tuple[str, ...]:
    return tuple(getattr(task, "transfer_metrics", TRANSFER_METRICS))


def extra_metrics(row: dict[str, Any], metric: str) -> list[str]:
    """The scalar metrics of a transfer-table row beside the run's own, in the row's order."""
    return [m for m, v in row.items() if m != metric and isinstance(v, (int, float))]


def build_sections(summary: dict[str, Any]) -> list[tuple[str, list[list[str]] | None, str | None]]:
    """(title, table, note) per section; markdown and HTML render the same sections."""
    metric = summary["metric"]
    transfer = summary["transfer"]
    sections: list[tuple[str, list[list[str]] | None, str | None]] = []
    extra = extra_metrics(transfer["fine_tuned"], metric)
    rows = [[name_of(summary, k), transfer[k][metric], *(transfer[k].get(m, float("nan")) for m in extra),
             f"{(transfer[k][metric] - transfer['majority'][metric]) * 100:+.1f} pts" if "majority" in transfer else ""]
            for k in PRIMARY_ORDER if k in transfer]
    gain = ""
    if "linear_probe" in transfer:
        d = transfer["fine_tuned"][metric] - transfer["linear_probe"][metric]
        gain += f"Fine-tuning adds {d * 100:+.1f} points of {metric} over the frozen pretrained features. "
    if "scratch" in transfer:
        d = transfer["fine_tuned"][metric] - transfer["scratch"][metric]
        if minimized(metric):  # a loss: lower is better, and it is not a fraction
            gain += (f"Pretraining changes test {metric} by {d:+.3f} against the same model trained from scratch "
                     f"({'better' if d < 0 else 'worse'}: lower is better).")
        else:
            gain += f"Pretraining is worth {d * 100:+.1f} points over the same model trained from scratch."
    sections.append(("Transfer: what the pretrained weights bought",
                     _table(["model", f"test {metric}", *(f"test {m}" for m in extra), "over majority"], rows),
                     gain or None))
    scalars = [[k, v] for k, v in summary["test"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    sections.append(("Test metrics", _table(["metric", "value"], scalars), None))
    cal = calibration_rows(summary["test"])
    if cal:
        sections.append(("Calibration (test)", _table(["", "ECE", "max CE", "NLL"], cal),
                         "Expected calibration error: |accuracy - confidence| over 15 confidence bins, weighted by "
                         "their size (0 is perfect). Temperature scaling (methods.temperature_scaling) is fitted on "
                         "the validation split and never changes the predicted class."))
    per_class = summary["test"].get("per_class", {})
    if per_class:
        sections.append(("Test metrics per class", _table(
            ["label", "precision", "recall", "F1", "support"],
            [[k, v["precision"], v["recall"], v["f1"], v["support"]] for k, v in per_class.items()]), None))
    if summary.get("samples"):
        sections.append((f"Test samples (first {len(summary['samples'])})", _table(
            ["input", "reference", "output"], [[_clip(r["input"]), r["reference"], r["output"]]
                                               for r in summary["samples"]]), None))
    d = summary["data"]
    data_rows = [["train / validation / test", " / ".join(str(d["sizes"][s]) for s in ("train", "validation", "test"))],
                 ["duplicates removed", d["duplicates_removed_within"]],
                 ["duplicates with conflicting labels", d["duplicates_with_conflicting_labels"]],
                 ["leaked texts removed (validation, test)",
                  ", ".join(str(v) for v in d["leaked_removed"].values()) or "0"]]
    sections.append(("Data", _table(["", ""], data_rows), None))
    t = summary["train"]
    train_rows = [["model", summary["model"]],
                  ["parameters trained / total", f"{t['trainable_params']:,} / {t['total_params']:,} "
                   f"({100 * t['trainable_params'] / max(t['total_params'], 1):.2f}%)"],
                  ["processes", str(t.get("processes", 1))],
                  ["optimizer steps", str(t["steps"])], ["epochs", f"{t['epochs']:g}"],
                  ["stopped early", str(t["stopped_early"])], ["best validation step", str(t["best_step"])],
                  ["training time (s)", f"{t['seconds']:.1f}"], ["samples/s", f"{t['samples_per_s']:.1f}"],
                  ["real (non-pad) tokens/s", f"{t['tokens_per_s']:.0f}"],
                  ["peak RSS (MB)", f"{t['peak_rss_mb']:.0f}" + (f" ({t['allocator']})" if t.get("allocator") else "")]]
    sections.append(("Training", _table(["", ""], train_rows), None))
    if summary.get("explanations"):
        e = summary["explanations"]
        sections.append(("Explanations", None, f"Word attributions (integrated gradients, {e['steps']} steps) of the "
                         f"{e['errors']} most confident test errors and the {e['correct']} most confident correct "
                         f"predictions: [{e['file']}]({e['file']})."))
    if summary.get("trust"):
        t = summary["trust"]
        rows = [[f"ECE, {k}", v] for k, v in t["ece"].items()]
        rows += [[f"flip rate, {k}", v] for k, v in t["flip_rates"].items() if v is not None]
        if t["attack_success_rate"] is not None:
            rows.append(["word-substitution attack success rate", t["attack_success_rate"]])
        rows += [[f"bias, {k}: largest gap (points)", v] for k, v in t["bias_max_gap_points"].items()]
        sections.append(("Trust checks", _table(["", ""], rows), f"Details: [{t['file']}]({t['file']})."))
    if summary.get("methods"):
        rows = [[m["method"], ", ".join(f"{k}={_short(v)}" for k, v in m.items() if k != "method")]
                for m in summary["methods"]]
        sections.append(("Methods (in composition order)", _table(["method", "settings and what it did"], rows),
                         None))
    return sections


def calibration_rows(test: dict[str, Any]) -> list[list[Any]]:
    if "reliability" not in test:
        return []
    rows = []
    if "reliability_uncalibrated" in test:
        rows.append(["uncalibrated (temperature 1)", test["reliability_uncalibrated"]["ece"],
                     test["reliability_uncalibrated"]["mce"], test["nll_uncalibrated"]])
    name = f"temperature {test['temperature']:.3f}" if "temperature" in test else "as trained"
    rows.append([name, test["reliability"]["ece"], test["reliability"]["mce"], test["nll"]])
    return rows


def _clip(text: str, n: int = 160) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def write_report(run_dir: Path, summary: dict[str, Any], history: list[dict[str, Any]]) -> tuple[Path, Path]:
    metric = summary["metric"]
    plots: list[tuple[str, Path]] = []
    p = plot_transfer(summary["transfer"], metric, run_dir / "transfer.png", summary.get("baseline_names"))
    plots.append(("Transfer", p))
    curves = plot_curves(history, metric, run_dir / "curves.png")
    if curves:
        plots.append(("Training and validation curves", curves))
    if "confusion_matrix" in summary["test"]:
        names = summary["test"].get("confusion_labels", summary["labels"])
        plots.append(("Confusion matrix (test)", plot_confusion(summary["test"]["confusion_matrix"],
                                                                names, run_dir / "confusion.png")))
    test = summary["test"]
    if "reliability" in test:
        from transferkit.evaluation.calibration import plot_reliability

        rel: dict[str, dict[str, Any]] = {}
        if "reliability_uncalibrated" in test:
            rel["uncalibrated"] = test["reliability_uncalibrated"]
        rel[f"temperature {test['temperature']:.2f}" if "temperature" in test else "model"] = test["reliability"]
        plots.append(("Reliability (test)", plot_reliability(rel, run_dir / "reliability.png")))
    labels = f" · labels: {', '.join(summary['labels'])}" if summary["labels"] else ""
    lead = f"Task: {summary['task']}{labels} · test {metric}: **{summary['test'][metric]:.4f}**"
    return _write(run_dir, f"transferkit report: {summary['name']}", lead, build_sections(summary), plots)


def _write(run_dir: Path, title: str, lead: str, sections, plots: list[tuple[str, Path]]) -> tuple[Path, Path]:
    """report.md and a self-contained report.html (plots inlined) from sections and plots."""
    md = [f"# {title}", "", lead, ""]
    for head, table, note in sections:
        md += [f"## {head}", ""]
        if table:
            md += [_md(table), ""]
        if note:
            md += [note, ""]
    for caption, path in plots:
        md += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    md_path = run_dir / "report.md"
    md_path.write_text("\n".join(md), encoding="utf-8")

    css = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
           "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
           "text-align:left}th{background:#f3f3f3}img{max-width:100%}")
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(lead.replace('**', ''))}</p>"]
    for head, table, note in sections:
        body.append(f"<h2>{html.escape(head)}</h2>")
        if table:
            body.append(_html_table(table))
        if note:
            body.append(f"<p>{html.escape(note)}</p>")
    for caption, path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        body.append(f"<h2>{html.escape(caption)}</h2><img alt='{html.escape(caption)}' "
                    f"src='data:image/png;base64,{data}'>")
    html_path = run_dir / "report.html"
    html_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                         f"<style>{css}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return md_path, html_path


def pretrain_keys(metrics: dict[str, Any]) -> tuple[str, str, str, str]:
    """(loss key, its name, accuracy key, its name) of a pretraining objective's held-out metrics."""
    if "lm_loss" in metrics:
        return "lm_loss", "next-token loss", "next_token_accuracy", "next-token accuracy"
    return "mlm_loss", "MLM loss", "masked_accuracy", "masked-token accuracy"


def plot_pretrain_curves(history: list[dict[str, Any]], path: Path) -> Path | None:
    train = [(h["step"], h["loss"]) for h in history if h["split"] == "train" and "loss" in h]
    val = [h for h in history if h["split"] == "validation" and ("mlm_loss" in h or "lm_loss" in h)]
    if not train and not val:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    lk, lname, ak, aname = pretrain_keys(val[0] if val else {})
    if train:
        ax[0].plot(*zip(*train), label="train loss" + (" (MLM + pair)" if val and "pair_accuracy" in val[0] else ""))
    if val:
        steps = [h["step"] for h in val]
        ax[0].plot(steps, [h[lk] for h in val], "o-", label=f"held-out {lname}")
        ax[1].plot(steps, [h[ak] for h in val], "o-", color="tab:green", label=aname)
        if "pair_accuracy" in val[0]:
            ax[1].plot(steps, [h["pair_accuracy"] for h in val], "s-", color="tab:purple", label="pair accuracy")
        ax[1].legend()
    ax[0].set_xlabel("optimizer step")
    ax[0].set_title("loss")
    ax[0].legend()
    ax[1].set_xlabel("optimizer step")
    ax[1].set_title("held-out accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_pretrain_report(run_dir: Path, summary: dict[str, Any], history: list[dict[str, Any]]) -> tuple[Path, Path]:
    b, a, t, c, m = (summary["heldout_before"], summary["heldout_after"], summary["train"], summary["corpus"],
                     summary["model"])
    lk, lname, ak, aname = pretrain_keys(a)
    keys = [(lk, lname, ".4f"), ("perplexity", "perplexity", ".2f"), (ak, aname, ".4f"),
            ("pair_accuracy", "sentence-pair accuracy", ".4f")]
    held = _table(["held-out", "before", "after"],
                  [[name, format(b[k], f), format(a[k], f)] for k, name, f in keys if k in a])
    model = m["path"] if m["init"] == "pretrained" else f"BERT-{m['size']} from scratch"
    info = _table(["", ""], [["model", model], ["parameters", f"{m['parameters']:,}"],
                             ["vocabulary", f"{m['vocab_size']:,}"], ["sequence length", m["max_length"]],
                             ["objective", json.dumps(summary["objective"])],
                             ["corpus documents (train / held-out)",
                              f"{c['train_documents']:,} / {c['heldout_documents']:,}"],
                             ["duplicates removed", f"{c['duplicates_removed']:,}"],
                             ["training sequences / tokens", f"{c['train_sequences']:,} / {c['train_tokens']:,}"]])
    train = _table(["", ""], [["steps", t["steps"]], ["epochs", t["epochs"]], ["time (s)", f"{t['seconds']:.1f}"],
                              ["tokens/s", f"{t['tokens_per_s']:.0f}"],
                              ["padding fraction", f"{t['padding_fraction']:.2%}"],
                              ["peak RSS (MB)", f"{t['peak_rss_mb']:.0f}"]])
    sections = [("Held-out evaluation", held, None), ("Setup", info, None), ("Training", train, None)]
    if summary["vocab_extension"]:
        ext = summary["vocab_extension"]
        rows = [[e["word"], e["frequency"], e["pieces"]] for e in ext[:30]]
        sections.append((f"Vocabulary extension ({len(ext)} words; the 30 most frequent)",
                         _table(["word", "frequency", "pieces before"], rows), None))
    plots = []
    curves = plot_pretrain_curves(history, run_dir / "curves.png")
    if curves:
        plots.append(("Training curves", curves))
    lead = (f"Pretraining · held-out perplexity {b['perplexity']:.1f} -> **{a['perplexity']:.2f}**, {aname} "
            f"{b[ak]:.3f} -> **{a[ak]:.3f}**")
    return _write(run_dir, f"transferkit pretraining report: {summary['name']}", lead, sections, plots)
