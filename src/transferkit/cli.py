"""The `transferkit` command. Each command is a few lines over a pure function; errors caused by the
user's input print a clear message and exit with code 2."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferkit.errors import TransferkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Transfer learning for NLP.")
config_app = typer.Typer(no_args_is_help=True, help="Check and explain run configs.")
app.add_typer(config_app, name="config")
out = Console()
err = Console(stderr=True)

OVERRIDES = typer.Argument(None, help="Dotted overrides, e.g. train.optimizer.lr=3e-5 train.epochs=2")


def _setup_logging(quiet: bool) -> None:
    from rich.logging import RichHandler

    # Under torchrun only the first process reports; the others would repeat every line.
    secondary = os.environ.get("RANK", "0") != "0"
    level = logging.ERROR if secondary else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)], force=True)
    # transformers/datasets are chatty about things that are expected here (new head weights, caching).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "datasets", "accelerate", "httpx", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:
        pass


def _fail(e: TransferkitError) -> None:
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


@app.command()
def finetune(
    config: Path = typer.Argument(..., help="Run config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the final report."),
) -> None:
    """Fine-tune a pretrained model on a labelled task and write the run folder and report."""
    _setup_logging(quiet)
    from transferkit.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        from transferkit.recipes.finetune import run

        summary = run(cfg, resume=resume, overwrite=overwrite, progress=not quiet)
    except TransferkitError as e:
        _fail(e)
        return
    if summary:
        _print_summary(summary, cfg.run_dir)


@app.command()
def pretrain(
    config: Path = typer.Argument(..., help="Pretraining config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    resume: bool = typer.Option(False, "--resume", help="Continue the run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the final summary."),
) -> None:
    """Pretrain (masked LM, optionally NSP/SOP) from scratch or continue a checkpoint on domain text."""
    _setup_logging(quiet)
    from transferkit.config import load_pretrain_config

    try:
        cfg = load_pretrain_config(config, overrides or [])
        from transferkit.recipes.pretrain import run

        s = run(cfg, resume=resume, overwrite=overwrite, progress=not quiet)
    except TransferkitError as e:
        _fail(e)
        return
    if s:
        b, a, t = s["heldout_before"], s["heldout_after"], s["train"]
        out.print(f"{s['name']}: held-out perplexity {b['perplexity']:.1f} -> {a['perplexity']:.2f}, "
                  f"masked-token accuracy {b['masked_accuracy']:.3f} -> {a['masked_accuracy']:.3f}")
        out.print(f"training: {t['steps']} steps, {t['seconds']:.0f} s, {t['tokens_per_s']:.0f} tokens/s, "
                  f"padding {t['padding_fraction']:.1%}, peak RSS {t['peak_rss_mb']:.0f} MB")
        out.print(f"report: {cfg.run_dir / 'report.md'} · model: {cfg.run_dir / 'model'} "
                  f"(use it as model.path in a finetune config)")


@app.command()
def curve(
    config: Path = typer.Argument(..., help="Fine-tuning config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    labels: str = typer.Option("250,1000,4000,all", help="Label counts (training examples); 'all' = the whole split."),
    seeds: str = typer.Option("1,2,3", help="Seeds: each draws its own sample and initialisation."),
    seeds_all: Optional[str] = typer.Option(None, help="Seeds of the 'all' point only (it is the costliest)."),
    vs: Optional[str] = typer.Option(None, help="Also fine-tune this other pretrained model (e.g. minilm)."),
    scratch: bool = typer.Option(True, help="Also train the same architecture from random init."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Learning curve: test metric vs number of labels, pretrained vs from scratch, mean +- std over seeds."""
    _setup_logging(quiet)
    from transferkit.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        sizes = [0 if x.strip() == "all" else int(x) for x in labels.split(",") if x.strip()]
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
        seed_all = [int(x) for x in seeds_all.split(",") if x.strip()] if seeds_all else None
    except ValueError:
        _fail(TransferkitError(f"--labels/--seeds: comma-separated integers (and 'all'), got '{labels}' / '{seeds}'"))
        return
    except TransferkitError as e:
        _fail(e)
        return
    from transferkit.recipes.curve import run_curve

    try:
        run_curve(cfg, sizes, seed_list, vs=vs, scratch=scratch, progress=not quiet, seeds_all=seed_all)
    except TransferkitError as e:
        _fail(e)
        return
    out.print((cfg.run_dir / "curve.md").read_text(encoding="utf-8"))
    out.print(f"plot: {cfg.run_dir / 'curve.png'} · data: {cfg.run_dir / 'curve.json'}")


def _print_summary(s: dict, run_dir: Path) -> None:
    metric = s["metric"]
    table = Table(title=f"{s['name']}: what the transfer bought (test split, n={s['data']['sizes']['test']})")
    table.add_column("model")
    table.add_column(f"test {metric}", justify="right")
    second = "exact_match" if "exact_match" in s["transfer"]["fine_tuned"] else "macro_f1"
    table.add_column(second.replace("_", " ").replace("f1", "F1"), justify="right")
    from transferkit.evaluation.report import PRIMARY_ORDER, name_of

    for k in PRIMARY_ORDER:
        if k in s["transfer"]:
            row = s["transfer"][k]
            table.add_row(name_of(s, k), f"{row[metric]:.4f}", f"{row.get(second, float('nan')):.4f}")
    out.print(table)
    t = s["train"]
    out.print(f"training: {t['steps']} steps, {t['seconds']:.0f} s, {t['samples_per_s']:.1f} samples/s, "
              f"peak RSS {t['peak_rss_mb']:.0f} MB")
    out.print(f"report: {run_dir / 'report.md'} (and report.html) · model: {run_dir / 'model'}")


def _read_inputs(path: Optional[Path], column: str) -> list[str]:
    """Texts to predict: stdin lines, a .txt file (one text per non-blank line), or a csv/jsonl column."""
    from transferkit.data.checks import check_texts
    from transferkit.data.sources import read_file, to_examples

    if path is None:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    ds = read_file(path)
    if path.suffix.lower() == ".txt":
        return [t for t in ds["text"] if t.strip()]
    ex = to_examples(ds, text_column=column, label_column=None, text_pair_column=None, where=str(path),
                     name="input")
    check_texts(ex)
    return ex.texts


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder (or its model/ folder)."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="csv / jsonl / txt; default: stdin lines."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSONL here; default: stdout."),
    text_column: str = typer.Option("text", help="Text column of a csv/jsonl input."),
    batch_size: int = typer.Option(64, help="Examples per forward pass."),
    int8: bool = typer.Option(False, "--int8", help="int8 dynamic quantization (CPU): faster, slightly less exact."),
) -> None:
    """Predict for new inputs (texts; JSONL records for NER, QA and relations); one JSON object per line."""
    _setup_logging(quiet=True)
    try:
        from transferkit.deploy.predictor import Predictor

        predictor = Predictor.load(run, int8=int8)
        structured = hasattr(predictor.task, "examples_for_prediction")
        if structured and input is not None and input.suffix.lower() in (".jsonl", ".json"):
            from transferkit.data.sources import iter_jsonl

            items: list = [rec for _, rec in iter_jsonl(input)]  # NER {text} or {tokens}; QA {question, context}; RE {text, head, tail}
        else:
            items = _read_inputs(input, text_column)
        preds = predictor.predict(items, batch_size=batch_size)
    except TransferkitError as e:
        _fail(e)
        return
    lines = [json.dumps({**(t if isinstance(t, dict) else {"text": t}), **p}, ensure_ascii=False)
             for t, p in zip(items, preds)]
    if output:
        output.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    else:
        for line in lines:
            typer.echo(line)


@config_app.command("validate")
def config_validate(config: Path, overrides: Optional[list[str]] = OVERRIDES) -> None:
    """Check a config (finetune, or pretrain when it has a corpus section); list every problem."""
    from transferkit.config import PretrainConfig, load_any_config

    try:
        cfg = load_any_config(config, overrides or [])
    except TransferkitError as e:
        _fail(e)
        return
    kind = "pretraining" if isinstance(cfg, PretrainConfig) else "fine-tuning"
    out.print(f"[green]ok[/]: {config} is a valid {kind} config")


@config_app.command("explain")
def config_explain(config: Path, overrides: Optional[list[str]] = OVERRIDES) -> None:
    """Every setting of a config: its value, its default and what it does."""
    from transferkit.config import explain, load_any_config

    try:
        cfg = load_any_config(config, overrides or [])
    except TransferkitError as e:
        _fail(e)
        return
    table = Table(title=str(config), show_lines=False)
    for col in ("key", "value", "default", "description"):
        table.add_column(col, overflow="fold")
    for key, value, default, desc in explain(cfg):
        changed = value != default
        table.add_row(key, f"[bold]{escape(str(value))}[/]" if changed else escape(str(value)), escape(str(default)), escape(desc))
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
