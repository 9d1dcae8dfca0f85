"""The `transferkit` command. Each command is a few lines over a pure function; errors caused by the
user's input print a clear message and exit with code 2."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

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
    for name in ("transformers", "datasets", "accelerate", "httpx", "urllib3", "filelock", "huggingface_hub"):
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
    err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(e.exit_code)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """What reaches the user: a message and an exit code, never a traceback. Errors caused by the input
    exit 2; Ctrl-C exits 130; a full disk is said as such; anything else is a bug, reported in one line
    with the traceback saved to a file (TRANSFERKIT_DEBUG=1 shows it)."""
    import click

    from transferkit.errors import Interrupted, StorageError

    try:
        yield
    except (click.exceptions.Exit, click.exceptions.ClickException, click.exceptions.Abort):
        raise
    except TransferkitError as e:
        _fail(e)
    except KeyboardInterrupt:
        _fail(Interrupted("interrupted (Ctrl-C). A training run keeps the checkpoints it had saved: continue it "
                          "with the same command and --resume."))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            _fail(StorageError(f"no space left on device while writing '{e.filename or '?'}'. Free some space "
                               "and rerun (a training run: with --resume)."))
        _internal(e)
    except Exception as e:  # noqa: BLE001 - the last line of defence: no traceback reaches a user
        _internal(e)


def _internal(e: BaseException) -> None:
    import tempfile
    import traceback

    if os.environ.get("TRANSFERKIT_DEBUG"):
        raise e
    fd, path = tempfile.mkstemp(prefix="transferkit-error-", suffix=".txt")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    err.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(first[:300])}\nThis is a bug in transferkit, "
              f"not in your input. The traceback is in {path}; please include it when you report the bug "
              "(TRANSFERKIT_DEBUG=1 prints it here).", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


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

    with _user_errors():
        from transferkit.api import finetune as run

        result = run(load_config(config, overrides or []), resume=resume, overwrite=overwrite, progress=not quiet)
        if result.summary:
            _print_summary(result.summary, result.run_dir)


@app.command()
def update(
    run_dir: Path = typer.Argument(..., help="The run to update (a finished fine-tuning run folder)."),
    data: Optional[str] = typer.Option(None, "--data", help="The new data: a file (.csv/.tsv/.jsonl) or a "
                                       "built-in name, split like the parent's."),
    name: Optional[str] = typer.Option(None, "--name", help="The new run's name (default: PARENT_update)."),
    overrides: Optional[list[str]] = OVERRIDES,
    resume: bool = typer.Option(False, "--resume", help="Continue the update from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the final report."),
) -> None:
    """Fine-tune a run's model on new data (a new run whose parent it is) and measure what it forgot and gained.

    Anti-forgetting methods are overrides like any other, e.g. methods.replay.size=1000, methods.ewc.strength=1,
    methods.l2sp.strength=0.01."""
    _setup_logging(quiet)
    with _user_errors():
        from transferkit.recipes import update as upd

        cfg = upd.plan(run_dir, data, name=name, overrides=overrides or [])
        s = upd.run(cfg, resume=resume, overwrite=overwrite, progress=not quiet)
        if s:
            _print_update(s, cfg.run_dir)


def _print_update(s: dict, run_dir: Path) -> None:
    u = s.get("update")
    if u:
        table = Table(title=f"{s['name']}: the update of {u['parent']} ({u['metric']}, before -> after)")
        for col in ("test split", "examples", "before", "after", "change"):
            table.add_column(col, justify="left" if col == "test split" else "right")
        for key, label in (("parent_test", "parent's (forgetting)"), ("new_test", "new data's (gain)")):
            if key in u:
                r = u[key]
                table.add_row(label, str(r["examples"]), f"{r['before']:.4f}", f"{r['after']:.4f}",
                              f"{r['change']:+.4f}")
        out.print(table)
        if "parent_test" not in u:
            out.print("forgetting not measured: the parent's test split could not be rebuilt (its data source is "
                      "not reachable from here; see the warning above)")
    t = s["train"]
    out.print(f"training: {t['steps']} steps, {t['seconds']:.0f} s · report: {run_dir / 'report.md'} · "
              f"model: {run_dir / 'model'}")


@app.command()
def search(
    config: Path = typer.Argument(..., help="Run config (YAML) with a `search:` section."),
    overrides: Optional[list[str]] = OVERRIDES,
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Finished trials to stop at (default: "
                                         "search.trials)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the final table."),
) -> None:
    """Hyperparameter search with Optuna (TPE + median pruning; SQLite: rerun to resume, run several to share)."""
    _setup_logging(quiet)
    with _user_errors():
        from transferkit.recipes import search as srch

        s = srch.run(config, overrides or [], trials=trials, progress=not quiet)
        n = s["trials"]
        out.print(f"study {s['study']}: {n['complete']} complete, {n['pruned']} pruned, {n['fail']} failed")
        if "best_trial" in s:
            params = ", ".join(f"{k}={v}" for k, v in s["best_params"].items())
            out.print(f"best: trial {s['best_trial']}, validation {s['metric']} {s['best_value']:.4f} ({params})")


@app.command()
def fewshot(
    config: Path = typer.Argument(..., help="Text-classification config (YAML), optionally with a `fewshot:` section."),
    overrides: Optional[list[str]] = OVERRIDES,
    shots: Optional[str] = typer.Option(None, help="Examples per class, e.g. 8,16,32,64 (default: fewshot.shots)."),
    seeds: Optional[str] = typer.Option(None, help="Seeds, e.g. 1,2,3 (default: fewshot.seeds, 1-10)."),
    methods: Optional[str] = typer.Option(None, help="Methods, comma-separated (default: fewshot.methods, all)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Few-shot benchmark: k examples per class, every method on the same samples, mean +- std over seeds."""
    _setup_logging(quiet)
    with _user_errors():
        from transferkit.recipes.fewshot import run_fewshot

        r = run_fewshot(config, overrides or [], shots=_int_list("--shots", shots) if shots else None,
                        seeds=_int_list("--seeds", seeds, minimum=None) if seeds else None,
                        methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None,
                        progress=not quiet)
        root = Path(r["folder"])
    out.print((root / "fewshot.md").read_text(encoding="utf-8"))
    out.print(f"plot: {root / 'fewshot.png'} · runs: {root / 'fewshot.jsonl'} ({sum(len(v) for v in r['results'].values())} cells)")


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished fine-tuning run folder."),
    suite: str = typer.Option("calibration", "--suite", help="Comma-separated suites: calibration, robustness, "
                              "bias, explanations."),
    apply: bool = typer.Option(False, "--apply", help="Write the temperature fitted on validation into the "
                               "model's task.json (predict and serve use it from then on)."),
    sample: int = typer.Option(500, "--sample", min=1, help="Robustness: test texts perturbed (seeded sample)."),
    attack_sample: int = typer.Option(200, "--attack-sample", min=0, help="Robustness: texts attacked (0: no attack)."),
    candidates: str = typer.Option("auto", "--attack-candidates", help="Attack substitutes: synonyms (WordNet / "
                                   "the Chinese table), embedding (the model's nearest input embeddings), auto."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample and of every perturbation."),
) -> None:
    """Trust checks on a run: calibration (ECE, NLL, reliability; temperature fitted on validation), robustness
    (CheckList-style invariance and directional tests, a word-substitution attack), bias (group-term probes)."""
    _setup_logging(True)
    with _user_errors():
        from transferkit.errors import ConfigError
        from transferkit.recipes.trust import evaluate_run

        if candidates not in ("auto", "synonyms", "embedding"):
            raise ConfigError([f"evaluate --attack-candidates: '{candidates}' is not one of auto, synonyms, embedding"])
        r = evaluate_run(run_dir, [s.strip() for s in suite.split(",") if s.strip()], apply=apply, sample=sample,
                         attack_sample=attack_sample, seed=seed, candidates=candidates)
    if "calibration" in r:
        c = r["calibration"]
        out.print(f"calibration: temperature fitted on validation {c['fitted_temperature']:.3f}"
                  f"{' (written into the model)' if c['applied'] else ''}")
        for name, t in c["test"].items():
            out.print(f"  test, {name}: accuracy {t['accuracy']:.4f} · ECE {t['ece']:.4f} · NLL {t['nll']:.4f}")
    if "robustness" in r:
        rb = r["robustness"]
        out.print(f"robustness ({rb['n']} test texts): " + ", ".join(
            f"{k} flips {v['flip_rate']:.3f}" for k, v in rb["invariance"].items() if v["n"]))
        if "attack" in rb:
            out.print(f"  attack: success rate {rb['attack']['success_rate']:.3f}, "
                      f"{rb['attack']['queries_mean']:.1f} queries per text")
    if "bias" in r:
        for probe, p in r["bias"]["probes"].items():
            out.print(f"bias, {probe}: largest gap {p['max_gap_points']:.2f} points of P({r['bias']['reference_label']})")
    out.print(f"report: {Path(run_dir) / 'trust' / 'trust.md'}")


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="A run folder, model folder or registry reference."),
    texts: list[str] = typer.Argument(..., help="The text(s) to explain."),
    method: str = typer.Option("ig", "--method", help="ig (integrated gradients) or rollout (attention rollout)."),
    target: Optional[str] = typer.Option(None, "--target", help="Explain this label (default: the predicted one)."),
    steps: int = typer.Option(50, "--steps", min=2, help="Integration points of integrated gradients."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write the highlighted texts as an HTML page."),
    as_json: bool = typer.Option(False, "--json", help="Print the attributions as JSON only."),
) -> None:
    """Which words pushed a prediction, and which way: token attributions of a classifier's prediction."""
    _setup_logging(True)
    with _user_errors():
        from transferkit.deploy.predictor import Predictor
        from transferkit.evaluation import attributions as at

        name = {"ig": "integrated_gradients", "rollout": "attention_rollout"}.get(method, method)
        if name not in at.METHODS:
            from transferkit.errors import ConfigError

            raise ConfigError([f"explain --method: unknown method '{method}'; choose ig or rollout"])
        pred = Predictor.load(_model_ref(run_dir))
        rows = at.explain(pred, texts, method=name, target=target, steps=steps)
        if html_out is not None:
            html_out.write_text(at.to_html(rows, title=f"{run_dir}: {name.replace('_', ' ')}"), encoding="utf-8")
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        if "entities" in r:  # NER: per entity
            if not r["entities"]:
                out.print(f"no entity in: {' '.join(r['words'])}")
            for e in r["entities"]:
                top = sorted(e["words"], key=lambda w: -abs(w["attribution"]))[:8]
                out.print(f"[bold]{e['type']}: {e['text']}[/bold]: "
                          + ", ".join(f"{w['word']} {w['attribution']:+.3f}" for w in top))
            continue
        if "context_words" in r:  # QA: per answer
            top = sorted(r["question_words"] + r["context_words"], key=lambda w: -abs(w["attribution"]))[:8]
            out.print(f"[bold]answer: {r['answer'] or '(none)'}[/bold]: "
                      + ", ".join(f"{w['word']} {w['attribution']:+.3f}" for w in top))
            continue
        top = sorted(r["words"], key=lambda w: -abs(w["attribution"]))[:8]
        out.print(f"[bold]{r['explained']}[/bold] ({r['probability']:.3f}; predicted {r['label']}): "
                  + ", ".join(f"{w['word']} {w['attribution']:+.3f}" for w in top))
    if html_out is not None:
        out.print(f"page: {html_out}")


@app.command()
def drift(
    run_dir: Path = typer.Argument(..., help="A fine-tuning run folder (it keeps a sample of its training data)."),
    data: str = typer.Option(..., "--data", help="The new texts: a file (.csv/.tsv/.jsonl) or a built-in name."),
    text_column: str = typer.Option("text", "--text-column", help="Column holding the text."),
    label_column: Optional[str] = typer.Option(None, "--label-column",
                                               help="Column holding labels, when the new data has them."),
    max_examples: int = typer.Option(1000, "--max-examples", help="Texts compared from each side (sampled)."),
    auc_max: float = typer.Option(0.75, "--auc-max", help="Flag when a classifier separates the samples better."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
    fail_on_drift: bool = typer.Option(False, "--fail-on-drift", help="Exit with status 3 when drift is found "
                                       "(to gate an update in a script)."),
) -> None:
    """Compare new texts with what a run was trained on and say whether an update is due."""
    _setup_logging(True)
    with _user_errors():
        from transferkit.continual import drift as dr
        from transferkit.data.sources import read_source, to_examples

        ds = read_source(data)
        split = ds["train"] if "train" in ds else next(iter(ds.values()))
        ex = to_examples(split, text_column=text_column, label_column=label_column, text_pair_column=None,
                         where=data, name="new", option="--text-column")
        report = dr.check(run_dir, ex.texts, ex.labels if label_column else None, max_examples=max_examples,
                          auc_max=auc_max)
        if json_out is not None:
            json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")
        _print_drift(report)
    if fail_on_drift and report["drift"]:
        raise typer.Exit(3)


def _print_drift(r: dict) -> None:
    table = Table(title=f"drift of {r['new_examples']} new texts against {r['run']}'s training sample")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("limit", justify="right")
    table.add_row("embedding: domain classifier ROC AUC", f"{r['embedding']['domain_auc']:.3f}",
                  f"{r['embedding']['max']}")
    if "confidence" in r:
        c = r["confidence"]
        table.add_row("confidence: mean top-class probability drop", f"{c['drop']:+.3f} (KS p {c['ks_pvalue']:.2g})",
                      f"{c['max_drop']}")
        table.add_row("predicted labels: total variation", f"{r['predicted_labels']['tvd']:.3f}",
                      f"{r['predicted_labels']['max']}")
    if "labels" in r:
        table.add_row("labels: total variation", f"{r['labels']['tvd']:.3f}", f"{r['labels']['max']}")
    v = r["vocabulary"]
    table.add_row("vocabulary: unseen-word rate minus baseline", f"{v['excess']:+.3f}", f"{v['max_excess']}")
    out.print(table)
    for f in r["flags"]:
        out.print(f"  - {f}")
    out.print(r["verdict"])


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

    with _user_errors():
        cfg = load_pretrain_config(config, overrides or [])
        from transferkit.api import pretrain as run

        s = run(cfg, resume=resume, overwrite=overwrite, progress=not quiet).summary
    if s:
        from transferkit.evaluation.report import pretrain_keys

        b, a, t = s["heldout_before"], s["heldout_after"], s["train"]
        _, _, ak, aname = pretrain_keys(a)
        out.print(f"{s['name']}: held-out perplexity {b['perplexity']:.1f} -> {a['perplexity']:.2f}, "
                  f"{aname} {b[ak]:.3f} -> {a[ak]:.3f}")
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

    with _user_errors():
        sizes = _int_list("--labels", labels, allow_all=True)
        seed_list = _int_list("--seeds", seeds, minimum=None)
        seed_all = _int_list("--seeds-all", seeds_all, minimum=None) if seeds_all else None
        cfg = load_config(config, overrides or [])
        from transferkit.recipes.curve import run_curve

        run_curve(cfg, sizes, seed_list, vs=vs, scratch=scratch, progress=not quiet, seeds_all=seed_all)
    out.print((cfg.run_dir / "curve.md").read_text(encoding="utf-8"))
    out.print(f"plot: {cfg.run_dir / 'curve.png'} · data: {cfg.run_dir / 'curve.json'}")


def _int_list(option: str, text: str, *, allow_all: bool = False, minimum: int | None = 1) -> list[int]:
    """'250,1000,all' -> [250, 1000, 0]: comma-separated integers (>= minimum), and 'all' where allowed."""
    values: list[int] = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        if allow_all and part == "all":
            values.append(0)
            continue
        try:
            v = int(part)
        except ValueError:
            v = None
        if v is None or (minimum is not None and v < minimum):
            allowed = f"integers >= {minimum}" if minimum is not None else "integers"
            raise TransferkitError(f"{option}: '{part}' in '{text}' is not allowed; give comma-separated {allowed}"
                                   + (" or 'all'" if allow_all else "") + ".")
        values.append(v)
    if not values:
        raise TransferkitError(f"{option}: no values in '{text}'.")
    return values


def _print_summary(s: dict, run_dir: Path) -> None:
    metric = s["metric"]
    table = Table(title=f"{s['name']}: what the transfer bought (test split, n={s['data']['sizes']['test']})")
    table.add_column("model")
    table.add_column(f"test {metric}", justify="right")
    from transferkit.evaluation.report import PRIMARY_ORDER, extra_metrics, name_of

    extra = extra_metrics(s["transfer"]["fine_tuned"], metric)
    for m in extra:
        table.add_column(m.replace("_", " ").replace("f1", "F1"), justify="right")
    for k in PRIMARY_ORDER:
        if k in s["transfer"]:
            row = s["transfer"][k]
            table.add_row(name_of(s, k), f"{row[metric]:.4f}", *(f"{row.get(m, float('nan')):.4f}" for m in extra))
    out.print(table)
    t = s["train"]
    out.print(f"training: {t['steps']} steps, {t['seconds']:.0f} s, {t['samples_per_s']:.1f} samples/s, "
              f"peak RSS {t['peak_rss_mb']:.0f} MB")
    out.print(f"report: {run_dir / 'report.md'} (and report.html) · model: {run_dir / 'model'}")


def _stdin_lines() -> list[str]:
    """stdin as text lines; bytes that are not UTF-8 (binary data) stop with the line that holds them."""
    from transferkit.errors import DataError

    stream = getattr(sys.stdin, "buffer", None)
    raw = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"stdin line {line} is not UTF-8 text (byte 0x{raw[e.start]:02x}): predict reads one text "
                        "per line. Pipe text, or give a file with --input.") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"stdin line {line} holds a NUL byte: this is binary data, not text. Pipe text, or give a "
                        "file with --input.")
    return text.splitlines()


def _every_line(path: Path, rows: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """JSONL rows ('FILE line N', item) with the blank lines put back as (where, None): output line N then
    answers input line N."""
    by_line = {int(where.rsplit(" ", 1)[1]): (where, item) for where, item in rows}
    n_lines = len(path.read_bytes().decode("utf-8", "replace").splitlines())
    return [by_line.get(n, (f"{path} line {n}", None)) for n in range(1, n_lines + 1)]


def _read_inputs(path: Optional[Path], column: str, structured: bool) -> list[tuple[str, Any]]:
    """(where, input) for every input, in order: stdin lines, a .txt file's lines, csv/jsonl rows (a text
    column, or whole records for NER, QA and relations). An input that is empty is kept as (where, None), so
    that output line N always answers input N."""
    from transferkit.data.sources import iter_jsonl, read_file, to_examples

    if path is None:
        return [(f"stdin line {n}", line if line.strip() else None) for n, line in enumerate(_stdin_lines(), 1)]
    jsonl = path.suffix.lower() in (".jsonl", ".json")
    if structured and jsonl:
        if not path.is_file():
            read_file(path)  # the same message as every other missing input
        return _every_line(path, list(iter_jsonl(path)))
    ds = read_file(path)
    if path.suffix.lower() == ".txt":
        return [(f"{path} line {n}", t if t.strip() else None) for n, t in enumerate(ds["text"], 1)]
    ex = to_examples(ds, text_column=column, label_column=None, text_pair_column=None, where=str(path),
                     name="input", option="--text-column")
    rows = [(where, t if t.strip() else None) for where, t in zip(ex.origin, ex.texts)]
    return _every_line(path, rows) if jsonl else rows


def _check_output(path: Path, inputs: Optional[Path], run: Path) -> None:
    """Fail before predicting when the output cannot be written, or would overwrite the input or the run."""
    import tempfile

    from transferkit.errors import TransferkitError as E

    target = path.resolve()
    if inputs is not None and inputs.exists() and target == inputs.resolve():
        raise E(f"--output '{path}' is the input file: predicting would overwrite it. Write elsewhere, e.g. "
                f"--output {path.with_suffix('.predictions.jsonl')}")
    run_root = run.resolve()
    if run_root.is_dir() and (run_root == target or run_root in target.parents):
        raise E(f"--output '{path}' lies inside the run folder '{run}': predictions never overwrite a run's "
                "files. Write them elsewhere.")
    if path.is_dir():
        raise E(f"--output '{path}' is a folder: give a file name, e.g. --output {path / 'predictions.jsonl'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise E(f"--output '{path}': the folder '{parent}' does not exist. Create it first (mkdir -p {parent}).")
    try:
        tempfile.NamedTemporaryFile(dir=parent, prefix=".transferkit-probe-").close()
    except OSError as e:
        raise E(f"--output '{path}': cannot write in '{parent}' ({e.strerror or e}).") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise E(f"--output '{path}' exists and is not writable.")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder (or its model/ folder, an export folder: ONNX Runtime, or a "
                               "registry reference: models:/NAME@ALIAS)."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="csv / jsonl / txt; default: stdin lines."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write JSONL here; default: stdout."),
    text_column: str = typer.Option("text", help="Text column of a csv/jsonl input."),
    batch_size: int = typer.Option(64, min=1, max=65536, help="Examples per forward pass."),
    int8: bool = typer.Option(False, "--int8", help="int8 (CPU): an export's int8 model, else dynamic quantization "
                              "in torch; faster, slightly less exact."),
    explain_with: Optional[str] = typer.Option(None, "--explain", help="Add word attributions of each prediction: "
                                               "ig (integrated gradients, 32 steps) or rollout (classification)."),
) -> None:
    """Predict for new inputs (texts; JSONL records for NER, QA and relations); one JSON object per line,
    line N for input N (an empty input gets a record with an "error" field)."""
    _setup_logging(quiet=True)
    with _user_errors():
        if output is not None:
            _check_output(output, input, run)
        from transferkit.deploy.predictor import Predictor

        if explain_with and explain_with not in ("ig", "rollout"):  # before anything is loaded or predicted
            from transferkit.errors import ConfigError

            raise ConfigError([f"predict --explain: unknown method '{explain_with}'; choose ig or rollout"])
        predictor = Predictor.load(_model_ref(run), int8=int8)
        structured = hasattr(predictor.task, "examples_for_prediction")
        inputs = _read_inputs(input, text_column, structured)
        valid = [item for _, item in inputs if item is not None]
        preds = iter(predictor.predict(valid, batch_size=batch_size))
        why = iter(_explanations(predictor, valid, explain_with, batch_size) if explain_with else [])
        lines, empty = [], []
        for where, item in inputs:
            if item is None:
                empty.append(where)
                lines.append(json.dumps({"error": f"empty input ({where}): nothing to predict"}, ensure_ascii=False))
            else:
                record = item if isinstance(item, dict) else {"text": item}
                extra = {"explanation": next(why)} if explain_with else {}
                lines.append(json.dumps({**record, **next(preds), **extra}, ensure_ascii=False))
        if not inputs:
            err.print("[yellow]warning:[/] no input: nothing to predict (pipe texts, one per line, or give --input).",
                      highlight=False)
        if empty:
            err.print(f"[yellow]warning:[/] {len(empty)} of {len(inputs)} inputs were empty ({', '.join(empty[:5])}"
                      f"{', ...' if len(empty) > 5 else ''}); their output lines hold an \"error\" field instead of "
                      "a prediction.", highlight=False, soft_wrap=True)
        if output:
            from transferkit.training.checkpoint import atomic_write_text

            atomic_write_text(output, "\n".join(lines) + ("\n" if lines else ""))
        else:
            for line in lines:
                typer.echo(line)


def _explanations(predictor: Any, texts: list[Any], method: str, batch_size: int) -> list[dict[str, Any]]:
    from transferkit.evaluation import attributions as at

    name = {"ig": "integrated_gradients", "rollout": "attention_rollout"}[method]
    rows: list[dict[str, Any]] = []
    step = min(batch_size, 16)
    for i in range(0, len(texts), step):  # the inputs as predict read them (texts, or relation records)
        for r in at.explain(predictor, list(texts[i:i + step]), method=name, steps=32):
            rows.append({k: r[k] for k in ("method", "explained", "words", "logit_difference", "delta") if k in r})
    return rows


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder (or its model/ folder)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Export folder; default: RUN/export."),
    int8: bool = typer.Option(False, "--int8", help="Also write an int8 model, if it passes the accuracy gate."),
    max_drop: float = typer.Option(0.5, "--max-drop", min=0.0, help="int8 gate: most points of the validation "
                                   "metric int8 may lose."),
    force: bool = typer.Option(False, "--force", help="Write the int8 model even when it fails the gate."),
    tolerance: float = typer.Option(1e-4, "--tolerance", min=0.0, help="Largest |ONNX - PyTorch| score difference "
                                    "allowed on validation."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Check on the first N validation examples only."),
    prune_heads: float = typer.Option(0.0, "--prune-heads", min=0.0, max=0.99, help="Fraction of attention heads to "
                                      "remove (least important first) before exporting."),
    prune_ffn: float = typer.Option(0.0, "--prune-ffn", min=0.0, max=0.99, help="Fraction of FFN neurons to remove "
                                    "in every layer."),
    recover_epochs: float = typer.Option(0.0, "--recover-epochs", min=0.0, help="Fine-tune the pruned model this "
                                         "many epochs on the run's training split (its settings) before exporting."),
) -> None:
    """Export a run's model to ONNX (checked against PyTorch on the run's validation split), optionally with an
    int8 model that is only written when it keeps the validation metric within --max-drop points."""
    _setup_logging(quiet=False)
    with _user_errors():  # a refused int8 model exits 1 (the fp32 export is written), bad input 2
        from transferkit.recipes.export import export as do_export

        manifest = do_export(run, output, int8=int8, max_drop=max_drop, force=force, tolerance=tolerance,
                             limit=limit, prune_heads=prune_heads, prune_ffn=prune_ffn, recover_epochs=recover_epochs)
    out.print(Path(manifest["dir"], "README.md").read_text(encoding="utf-8"), highlight=False)
    out.print(f"[green]exported[/] to {escape(manifest['dir'])}", soft_wrap=True, highlight=False)


@app.command()
def serve(
    model: Path = typer.Argument(..., help="Run folder, model folder, export folder (ONNX) or a registry reference "
                                 "(models:/NAME@ALIAS, models:/NAME/VERSION)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(1, min=1, help="Server processes, each with the model (its metrics are its own)."),
    api_keys: Optional[Path] = typer.Option(None, "--api-keys", help="API keys file (docs/deploy.md); also "
                                            "TRANSFERKIT_API_KEYS."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without API keys (a trusted network only)."),
    int8: bool = typer.Option(False, "--int8", help="Serve the int8 model."),
    max_texts: int = typer.Option(64, min=1, help="Most inputs per request."),
    max_chars: int = typer.Option(10_000, min=1, help="Most characters per input."),
    max_queue: int = typer.Option(512, min=1, help="Most queued inputs before 429."),
    max_batch_tokens: int = typer.Option(8192, min=64, help="Token budget of one model batch."),
    max_wait_ms: float = typer.Option(5.0, min=0, help="How long a batch waits for more requests."),
    timeout: float = typer.Option(30.0, min=0.001, help="Seconds before a request gets 504."),
    log_texts: bool = typer.Option(False, "--log-texts", help="Log request texts, personal data masked."),
) -> None:
    """Serve a model over HTTP: POST /v1/predict, GET /v1/model, /healthz, /readyz, /metrics, /docs."""
    _setup_logging(quiet=False)
    logging.getLogger("transferkit.serve").setLevel(logging.INFO)
    with _user_errors():
        import uvicorn

        from transferkit.serve import ServeSettings, create_app

        from pydantic import ValidationError

        from transferkit.errors import ConfigError

        try:
            settings = ServeSettings(model=_model_ref(model), int8=int8, api_keys=api_keys, auth=not no_auth, max_texts=max_texts,
                                     max_chars=max_chars, max_queue=max_queue, max_batch_tokens=max_batch_tokens,
                                     max_wait_ms=max_wait_ms, timeout_s=timeout, log_texts=log_texts)
        except ValidationError as e:
            raise ConfigError([str(x["msg"]).removeprefix("Value error, ") for x in e.errors()], "serve options") from None
        if workers == 1:
            app_ = create_app(settings)  # loads and warms the model: a bad folder fails here, before the port opens
            uvicorn.run(app_, host=host, port=port, access_log=False, log_level="warning",
                        timeout_graceful_shutdown=int(timeout) + 5)
        else:
            os.environ["TRANSFERKIT_SERVE_SETTINGS"] = settings.model_dump_json()
            create_app(settings)  # fail here on a bad folder or keys, not in every worker
            uvicorn.run("transferkit.serve.app:from_environment", factory=True, host=host, port=port,
                        workers=workers, access_log=False, log_level="warning",
                        timeout_graceful_shutdown=int(timeout) + 5)


def _model_ref(path: Path) -> Path:
    """A run/model/export folder as given, or the run folder a registry reference (models:/...) points at."""
    from transferkit import registry

    text = str(path)
    if text.startswith("models:"):
        text = "models:/" + text[len("models:"):].lstrip("/")
        return registry.resolve(text)
    return path


models_app = typer.Typer(no_args_is_help=True, help="Model versions in the MLflow registry (lineage, aliases).")
app.add_typer(models_app, name="models")
REGISTRY_URI = typer.Option(None, "--registry", help="MLflow registry URI (default: TRANSFERKIT_REGISTRY, else "
                            "sqlite:///mlruns.db in the working directory).")


def _uri(uri: Optional[str]) -> str:
    from transferkit import registry

    u = registry.resolve_uri(uri)
    if u is None:
        raise registry.RegistryError(f"the registry is off ({registry.ENV}=off); give --registry URI")
    return u


@models_app.command("list")
def models_list(name: Optional[str] = typer.Argument(None, help="A registered model (default: all)."),
                uri: Optional[str] = REGISTRY_URI) -> None:
    """Every version: its aliases, the kind of run, its parent version, its data fingerprint and run folder."""
    with _user_errors():
        from transferkit import registry

        rows = registry.versions(_uri(uri), name)
        table = Table(title=f"registered models ({_uri(uri)})")
        for col in ("model", "version", "aliases", "kind", "parent", "data", "run folder"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["name"], str(r["version"]), ", ".join(r["aliases"]), r["kind"], r["parent"],
                          r["data"][:12], r["run_dir"])
        out.print(table)


@models_app.command("promote")
def models_promote(name: str = typer.Argument(..., help="The registered model."),
                   version: int = typer.Argument(..., help="The version to promote."),
                   alias: str = typer.Option("production", "--alias", help="The alias to move."),
                   uri: Optional[str] = REGISTRY_URI) -> None:
    """Point an alias (production by default) at a version; `rollback` undoes it."""
    with _user_errors():
        from transferkit import registry

        r = registry.promote(_uri(uri), name, version, alias)
        was = f" (was version {r['previous']})" if r["previous"] is not None else ""
        out.print(f"models:/{name}@{alias} -> version {version}{was}")


@models_app.command("rollback")
def models_rollback(name: str = typer.Argument(..., help="The registered model."),
                    uri: Optional[str] = REGISTRY_URI) -> None:
    """Move production back to the version it pointed at before the last promotion."""
    with _user_errors():
        from transferkit import registry

        r = registry.rollback(_uri(uri), name)
        out.print(f"models:/{name}@production -> version {r['version']} (was version {r['previous']})")


keys_app = typer.Typer(no_args_is_help=True, help="API keys for `transferkit serve`.")
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: str = typer.Option("client", help="Name shown in the service's logs."),
    scope: list[str] = typer.Option(["predict"], "--scope", help="predict, admin and/or ingest (repeat the option)."),
) -> None:
    """Make an API key: prints the key (give it to the client) and the keys-file entry that holds only its hash."""
    from transferkit.serve.auth import SCOPES, digest, new_key

    bad = [s for s in scope if s not in SCOPES]
    if bad:
        _fail(TransferkitError(f"--scope {bad[0]}: unknown scope; allowed: {', '.join(SCOPES)}"))
    key = new_key()
    typer.echo(f"key: {key}")
    typer.echo("keys-file entry:")
    typer.echo(f"  - name: {name}\n    sha256: {digest(key)}\n    scopes: [{', '.join(scope)}]")


monitor_app = typer.Typer(no_args_is_help=True, help="Monitor a stream of texts: classify, store, alert, dashboard.")
app.add_typer(monitor_app, name="monitor")


def _monitor(config: Path, overrides: Optional[list[str]], fresh: bool) -> Any:
    from transferkit.apps.monitor import Monitor, MonitorConfig
    from transferkit.config import load_config

    cfg = load_config(config, overrides or [], schema=MonitorConfig)
    if fresh and cfg.database is None and (cfg.folder / "monitor.db").exists():
        for name in ("monitor.db", "monitor.db-wal", "monitor.db-shm", cfg.alerts.log or ""):
            p = cfg.folder / name
            if name and p.is_file():
                p.unlink()
    return Monitor(cfg)


@monitor_app.command("replay")
def monitor_replay(
    config: Path = typer.Argument(..., help="Monitor config (YAML), e.g. configs/monitor_guardian.yaml."),
    source: str = typer.Argument(..., help="A .csv / .jsonl / .txt file (.gz / .bz2 too), or guardian_headlines."),
    overrides: Optional[list[str]] = OVERRIDES,
    fresh: bool = typer.Option(False, "--fresh", help="Start from an empty database (the monitor folder's SQLite "
                               "file and alert log are deleted first)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Replay texts through the monitor in time order; print the alerts; write report.md and monitor.png."""
    _setup_logging(quiet)
    with _user_errors():
        from transferkit.apps.monitor.report import replay

        monitor = _monitor(config, overrides, fresh)
        try:
            r = replay(monitor, source, progress=not quiet)
            alerts = monitor.store.alerts(limit=10_000)
        finally:
            monitor.close()
    table = Table(title=f"alerts ({len(alerts)})")
    for col in ("window", "rule", "label", "message"):
        table.add_column(col, overflow="fold")
    for a in sorted(alerts, key=lambda a: a["window_start"]):
        table.add_row(a["window_start"][:10], a["rule"], a["label"] or "", escape(a["message"]))
    out.print(table)
    rate = f" ({r['texts_per_s']} texts/s)" if r["texts_per_s"] else ""
    out.print(f"{r['stored']} texts stored, {r['duplicates']} already there, in {r['seconds']} s{rate}; report: "
              f"{escape(str(monitor.cfg.folder / 'report.md'))}", soft_wrap=True, highlight=False)


@monitor_app.command("serve")
def monitor_serve(
    config: Path = typer.Argument(..., help="Monitor config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    host: Optional[str] = typer.Option(None, help="Address (default: web.host of the config)."),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="Port (default: web.port of the config)."),
) -> None:
    """The live monitor: dashboard at /, POST /v1/ingest, the watched folder (ingest.watch)."""
    _setup_logging(quiet=False)
    logging.getLogger("transferkit.monitor").setLevel(logging.INFO)
    with _user_errors():
        from transferkit.apps.monitor.web import serve as run_server

        monitor = _monitor(config, overrides, fresh=False)
        try:
            run_server(monitor, host or monitor.cfg.web.host, port or monitor.cfg.web.port)
        finally:
            monitor.close()


bot_app = typer.Typer(no_args_is_help=True, help="A customer-service bot: intents, FAQ retrieval, hand-off, chat page.")
app.add_typer(bot_app, name="bot")


def _bot_config(config: Path, overrides: Optional[list[str]]) -> Any:
    from transferkit.apps.bot import BotConfig
    from transferkit.config import load_config

    return load_config(config, overrides or [], schema=BotConfig)


@bot_app.command("build")
def bot_build(
    config: Path = typer.Argument(..., help="Bot config (YAML), e.g. configs/bot_en.yaml."),
    overrides: Optional[list[str]] = OVERRIDES,
    retrain: bool = typer.Option(False, "--retrain", help="Train the intent classifier again (replaces its run)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the result."),
) -> None:
    """Train the intent classifier if its run folder has no model yet, and build the FAQ index in the bot's folder."""
    _setup_logging(quiet)
    with _user_errors():
        from transferkit.apps.bot.evaluate import build

        r = build(_bot_config(config, overrides), progress=not quiet, retrain=retrain)
    out.print(f"FAQ index: {r['entries']} questions ({r['answers']} answers), {r['kind']} search; intent classifier "
              f"{'trained' if r['intents_trained'] else 'reused'}; {r['seconds']} s; folder: {escape(r['folder'])}",
              soft_wrap=True, highlight=False)


@bot_app.command("evaluate")
def bot_evaluate(
    config: Path = typer.Argument(..., help="Bot config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and the result."),
) -> None:
    """Intent accuracy, recall@1/@5, MRR, hand-off rate on the held-out paraphrases, vs TF-IDF; chooses the
    hand-off threshold on their validation half; writes metrics.json, report.md and threshold.json."""
    _setup_logging(quiet)
    with _user_errors():
        from transferkit.apps.bot.evaluate import evaluate as run_eval
        from transferkit.apps.bot.evaluate import report

        cfg = _bot_config(config, overrides)
        m = run_eval(cfg)
    out.print(report(m), soft_wrap=True, highlight=False, markup=False)
    out.print(f"written: {escape(str(cfg.folder / 'metrics.json'))}, report.md, threshold.json", highlight=False)


@bot_app.command("serve")
def bot_serve(
    config: Path = typer.Argument(..., help="Bot config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    host: Optional[str] = typer.Option(None, help="Address (default: web.host of the config)."),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="Port (default: web.port of the config)."),
) -> None:
    """The chat page at / and POST /v1/chat."""
    _setup_logging(quiet=False)
    logging.getLogger("transferkit.bot").setLevel(logging.INFO)
    with _user_errors():
        from transferkit.apps.bot.bot import Bot
        from transferkit.apps.bot.web import serve as run_server

        cfg = _bot_config(config, overrides)
        bot = Bot.load(cfg)
        try:
            run_server(bot, host or cfg.web.host, port or cfg.web.port)
        finally:
            bot.close()


@bot_app.command("chat")
def bot_chat(
    config: Path = typer.Argument(..., help="Bot config (YAML)."),
    overrides: Optional[list[str]] = OVERRIDES,
    session: str = typer.Option("terminal", help="Session id (turns are logged under it)."),
) -> None:
    """Chat in the terminal (one message per line; an empty line or Ctrl-D ends)."""
    _setup_logging(quiet=True)
    with _user_errors():
        from transferkit.apps.bot.bot import Bot

        bot = Bot.load(_bot_config(config, overrides))
        try:
            while True:
                try:
                    line = input("you> ").strip()
                except EOFError:
                    break
                if not line:
                    break
                r = bot.reply(session, line)
                tag = "hand-off" if r["handed_off"] else f"{r['intent']}, {r['score']}"
                out.print(f"bot> {escape(r['reply'])}  [dim]({escape(tag)})[/]", highlight=False)
        finally:
            bot.close()


@config_app.command("validate")
def config_validate(config: Path, overrides: Optional[list[str]] = OVERRIDES) -> None:
    """Check a config (finetune; pretrain when it has a corpus section; a monitor, bot or recommend config by its
    sections); list every problem."""
    from transferkit.config import PretrainConfig, load_any_config, load_config, read_yaml

    with _user_errors():
        from transferkit.apps import config_schema

        app_schema = config_schema(read_yaml(config))
        if app_schema is not None:
            kind, schema = app_schema
            load_config(config, overrides or [], schema=schema)
            out.print(f"[green]ok[/]: {config} is a valid {kind} config")
            return
        cfg = load_any_config(config, overrides or [])
        from transferkit.errors import ConfigError
        from transferkit.preflight import problems

        found = problems(cfg)
        if found:
            raise ConfigError(found, source=str(config))
    kind = "pretraining" if isinstance(cfg, PretrainConfig) else "fine-tuning"
    out.print(f"[green]ok[/]: {config} is a valid {kind} config")


@config_app.command("explain")
def config_explain(config: Path, overrides: Optional[list[str]] = OVERRIDES) -> None:
    """Every setting of a config: its value, its default and what it does."""
    from transferkit.config import explain, load_any_config

    with _user_errors():
        cfg = load_any_config(config, overrides or [])
    table = Table(title=str(config), show_lines=False)
    for col in ("key", "value", "default", "description"):
        table.add_column(col, overflow="fold")
    for key, value, default, desc in explain(cfg):
        changed = value != default
        table.add_row(key, f"[bold]{escape(str(value))}[/]" if changed else escape(str(value)), escape(str(default)), escape(desc))
    out.print(table)


def _add_apps() -> None:
    from transferkit.apps.recommend.cli import recommend_app

    app.add_typer(recommend_app, name="recommend")


_add_apps()


def main() -> None:
    from transferkit.allocator import reexec_with_jemalloc

    reexec_with_jemalloc(sys.orig_argv)  # returns only when jemalloc is not to be (or already is) used
    app()


if __name__ == "__main__":
    main()
