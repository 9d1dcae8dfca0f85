"""`transferkit recommend cold-start|personal CONFIG`: the commands (the experiments are in run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

recommend_app = typer.Typer(no_args_is_help=True, help="Interest scoring for recommendation: cold-start item "
                            "approval from text, personalised ranking with two towers.")


def _run(part: str, config: Path, overrides: Optional[list[str]], quiet: bool) -> None:
    from transferkit.cli import _setup_logging, _user_errors, out

    _setup_logging(quiet)
    with _user_errors():
        import logging

        from transferkit.apps.recommend import run as R
        from transferkit.apps.recommend.settings import RecommendConfig
        from transferkit.config import load_config

        logging.getLogger("transferkit.recommend").setLevel(logging.WARNING if quiet else logging.INFO)
        cfg = load_config(config, overrides or [], schema=RecommendConfig)
        result = R.cold_start(cfg, not quiet) if part == "cold_start" else R.personal(cfg, not quiet)
        report = R.write(cfg, part, result, _machine())
    out.print(report.read_text(encoding="utf-8"), highlight=False)
    out.print(f"results: {cfg.folder / 'results.json'}", highlight=False)


def _machine() -> str:
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


@recommend_app.command("cold-start")
def cold_start(config: Path = typer.Argument(..., help="Recommendation config (configs/recommend.yaml)."),
               overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
               quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
    """A movie's approval from its plot text: TF-IDF / frozen embeddings + ridge vs fine-tuned, k-fold."""
    _run("cold_start", config, overrides, quiet)


@recommend_app.command("personal")
def personal(config: Path = typer.Argument(..., help="Recommendation config (configs/recommend.yaml)."),
             overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides."),
             quiet: bool = typer.Option(False, "--quiet", "-q")) -> None:
    """Simulated readers' next articles ranked: TF-IDF, frozen embeddings, frozen and fine-tuned two towers."""
    _run("personal", config, overrides, quiet)
