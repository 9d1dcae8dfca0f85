"""Errors a user can act on: what was wrong, the value received, what is allowed, how to fix it.

Every error here maps to exit code 2 in the CLI and is raised before a run folder is written.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TransferkitError(Exception):
    """Base class for errors caused by the user's input (config, data, paths)."""

    exit_code = 2


class ConfigError(TransferkitError):
    """The run configuration is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} problem(s) in the configuration{where}:"]
        lines += [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class DataError(TransferkitError):
    """The data cannot be used as given (missing column, empty text, unknown label, bad encoding...)."""


class ModelError(TransferkitError):
    """The model cannot be loaded as given (path missing, unsupported architecture...)."""


class StorageError(TransferkitError):
    """A file could not be written (disk full, no permission); what was there before is intact."""


class CheckpointError(TransferkitError):
    """A checkpoint file cannot be read (truncated, corrupted, or not a checkpoint)."""

    def __init__(self, path: str, reason: str, advice: str = "") -> None:
        self.path, self.reason = path, reason
        super().__init__(f"checkpoint '{path}' is damaged ({reason}).{(' ' + advice) if advice else ''}")


class Interrupted(TransferkitError):
    """The user stopped the run (Ctrl-C / SIGTERM); what was saved is said in the message."""

    exit_code = 130


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """A ' Did you mean 'x'?' suffix when a close match exists, else ''."""
    by_fold = {str(c).casefold(): str(c) for c in choices}
    matches = difflib.get_close_matches(str(value).casefold(), list(by_fold), n=1, cutoff=0.6)
    return f" Did you mean '{by_fold[matches[0]]}'?" if matches else ""
