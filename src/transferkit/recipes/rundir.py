"""The run folder's lifecycle: a run folder is either complete-and-resumable or absent, and transferkit
never deletes or writes into a folder it did not create.

- `plan()` checks everything before anything is written: that the folder can be created, that an
  existing folder is a transferkit run folder of the same kind (only those are replaced or resumed), and
  on --resume that the config and the data are the run's.
- `RunFolder.create()` (main process) replaces the old run when --overwrite was given, then writes the
  marker file and the resolved config.
- `RunFolder.guard()` removes what the run wrote when it fails before its first checkpoint, so a rerun
  does not trip over a half-made folder.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from transferkit import __version__
from transferkit.config import dump_config, load_config
from transferkit.errors import ConfigError, TransferkitError

log = logging.getLogger(__name__)

MARKER = ".transferkit-run"
CONFIG = "config.resolved.yaml"
RESUMES = "resumes.jsonl"
#: what a run folder written before the marker existed may hold (only such folders count as run folders)
LEGACY_ENTRIES = {CONFIG, "metrics.json", "metrics.jsonl", "tensorboard", "report.md", "report.html",
                  "baselines.json", "checkpoints", "model", "scratch", "transfer.png", "curves.png",
                  "confusion.png"}
#: config fields that may differ on --resume: they change where the run lives or how often it is saved,
#: not what it computes
SAFE_ON_RESUME = {"name", "output.dir", "train.checkpoint_every"}
#: what transferkit itself writes into a run folder (anything else is the user's, and --overwrite refuses)
RUN_ENTRIES = LEGACY_ENTRIES | {MARKER, RESUMES, "adapter", "replay.jsonl", "registry.json", "tracking.json",
                                 "update.json", "reliability.png", "explanations.html", "trust"}


class RunFolderError(TransferkitError):
    """The run folder cannot be used as asked (not a run folder, exists, changed config on resume...)."""


def fingerprint(items: Iterable[Any]) -> str:
    """A short hash of the data a run trains on (texts and labels), to refuse resuming on other data."""
    h = hashlib.sha256()
    for x in items:
        h.update(json.dumps(x, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def describe_entries(entries: list[Path]) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in entries)
    shown = ", ".join(names[:8])
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}" + (", ..." if len(names) > 8 else "")


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of a run folder; {'kind': 'legacy'} for a run folder written before markers; else None."""
    m = path / MARKER
    if m.is_file():
        try:
            data = json.loads(m.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {"kind": "unknown"}
        except (OSError, ValueError):
            return {"kind": "unknown"}
    entries = {p.name for p in path.iterdir()}
    if CONFIG in entries and entries <= LEGACY_ENTRIES:
        return {"kind": "legacy"}
    return None


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: Path, where: str = "output -> dir") -> None:
    """Raise ConfigError when the folder `path` could not be created (a file in the way, no permission,
    a read-only or virtual file system). Leaves nothing behind."""
    anc = _nearest_existing(path)
    if not anc.is_dir():
        raise ConfigError([f"{where}: cannot create the run folder '{path}': '{anc}' is a file, not a folder."])
    try:
        probe = tempfile.mkdtemp(prefix=".transferkit-probe-", dir=anc)
        Path(probe).rmdir()
    except OSError as e:
        raise ConfigError([f"{where}: cannot create the run folder '{path}': '{anc}' is not writable "
                           f"({e.strerror or e}). Choose a folder you can write to (output.dir=...)."]) from None


def check_free_space(path: Path, model: Any, extra_runs: int = 1) -> None:
    """Before training: room for the checkpoints (last: weights + optimizer state, about 3x the weights in
    fp32; best: the weights) and the model folder, so a full disk is found now and not at the first save."""
    from transferkit.errors import StorageError
    from transferkit.training.checkpoint import free_bytes

    weights = sum(p.numel() * 4 for p in model.parameters())
    need = weights * 5 * extra_runs
    free = free_bytes(_nearest_existing(path))
    if free < need:
        raise StorageError(
            f"not enough free space for the run folder '{path}': {free / 2**20:.1f} MB free, about "
            f"{need / 2**20:.0f} MB needed (checkpoints with optimizer state, the best model, the model folder). "
            "Free some space or set output.dir to a larger disk.")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def config_changes(saved_yaml: str, cfg: BaseModel) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (value in the run, value now)} for every field that differs. The saved config is
    read through the current schema, so fields added since the run was made count at their defaults."""
    raw = yaml.safe_load(saved_yaml) or {}
    old_cfg = load_config(raw=raw, schema=type(cfg))
    observers = {f"methods.{name}." for c in (old_cfg, cfg) for name, section in getattr(c, "methods", {}).items()
                 if not type(section).affects_results}
    a, b = _flatten(old_cfg.model_dump(mode="json")), _flatten(cfg.model_dump(mode="json"))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not any(f"{k}.".startswith(o) for o in observers)}


@dataclass
class RunFolder:
    path: Path
    kind: str
    resume: bool
    overwrite: bool
    data_fingerprint: str | None = None
    #: the folder held a run that --overwrite replaces when the new run is created
    replace: bool = False
    #: the folder was absent (or empty) before this run: a failure before the first checkpoint removes it
    fresh: bool = True
    safe_changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def resumable(self) -> bool:
        return (self.path / "checkpoints" / "last.pt").is_file()

    def create(self, cfg: BaseModel) -> None:
        """Main process only: replace the old run (--overwrite), create the folder, write marker + config."""
        from transferkit.training.checkpoint import atomic_write_text

        if self.replace:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        marker = self.path / MARKER
        if self.fresh or not marker.is_file():
            info = {"kind": self.kind, "created": _dt.datetime.now().isoformat(timespec="seconds"),
                    "transferkit": __version__, "data": self.data_fingerprint}
            atomic_write_text(marker, json.dumps(info, indent=2))
        if self.fresh or self.safe_changes or not (self.path / CONFIG).is_file():
            atomic_write_text(self.path / CONFIG, dump_config(cfg))
        if self.resume and not self.fresh:
            with open(self.path / RESUMES, "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": _dt.datetime.now().isoformat(timespec="seconds"),
                                    "changed": {k: list(v) for k, v in self.safe_changes.items()}}) + "\n")

    def check_data(self, data_fingerprint: str) -> None:
        """--resume: the training data must be the run's (a file may have changed since it started)."""
        self.data_fingerprint = data_fingerprint
        marker = read_marker(self.path) if self.path.is_dir() else None
        saved = (marker or {}).get("data")
        if self.resume and not self.fresh and saved and saved != data_fingerprint:
            raise RunFolderError(
                f"--resume: the data differ from the data run '{self.path}' was trained on (fingerprint "
                f"{data_fingerprint}, the run's {saved}): a file changed since the run started. Restore it, or "
                "start a new run (name=...) or replace this one (--overwrite).")

    @contextlib.contextmanager
    def guard(self, main: bool = True) -> Iterator[None]:
        """On any failure before the first checkpoint of a fresh run, remove what it wrote."""
        try:
            yield
        except BaseException as e:
            if main and self.fresh and self.path.is_dir() and not self.resumable():
                shutil.rmtree(self.path, ignore_errors=True)
                note = (f" The run folder {self.path} was removed (it had no checkpoint yet): rerun the command "
                        "without --resume.")
                if isinstance(e, TransferkitError) and e.args:
                    e.args = (str(e).replace(" with --resume", "") + note, *e.args[1:])
                else:
                    log.warning("removed the unfinished run folder %s (it had no checkpoint yet)", self.path)
            raise


def plan(cfg: BaseModel, path: Path, kind: str, *, resume: bool, overwrite: bool) -> RunFolder:
    """Check the run folder before anything is written (the data are checked later, `RunFolder.check_data`,
    once they are read). Raises RunFolderError / ConfigError."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: give one of them.")
    rf = RunFolder(path=path, kind=kind, resume=resume, overwrite=overwrite)
    if path.exists() and not path.is_dir():
        raise ConfigError([f"output -> dir: the run folder '{path}' is a file. Choose another name= or output.dir=."])
    entries = list(path.iterdir()) if path.is_dir() else []
    check_writable(path)
    if not entries:
        return rf
    marker = read_marker(path)
    if marker is None:
        raise RunFolderError(
            f"'{path}' exists and is not a transferkit run folder (no {MARKER} file); it holds "
            f"{describe_entries(entries)}. transferkit only replaces or resumes folders it created: choose another "
            f"name (name=...) or output.dir."
        )
    found = marker.get("kind", "unknown")
    if not resume and not overwrite:
        raise RunFolderError(
            f"run folder '{path}' already exists. Pass --resume to continue it, --overwrite to replace "
            f"it, or choose another name (name=... or output.dir=...)."
        )
    if found not in (kind, "legacy"):
        raise RunFolderError(f"'{path}' is a {found} run folder, not a {kind} one: choose another name (name=...) "
                             "or output.dir.")
    foreign = sorted(p.name for p in entries if p.name not in RUN_ENTRIES)
    if overwrite:
        if foreign:
            raise RunFolderError(
                f"--overwrite: run folder '{path}' also holds files transferkit did not write ({', '.join(foreign[:8])}"
                f"{', ...' if len(foreign) > 8 else ''}); they would be deleted with it. Move them out first, or "
                "choose another name (name=...).")
        rf.replace = True
        return rf
    # --resume: the same run, on the same data
    rf.fresh = False
    last = path / "checkpoints" / "last.pt"
    if not last.is_file() and ((path / "metrics.json").is_file() or (path / "model").is_dir()):
        raise RunFolderError(
            f"--resume: run '{path}' has no checkpoint to resume from ({last} is missing), but it holds a trained "
            "model: resuming would train it again from step 0 and replace it. Use --overwrite to train again, or "
            "a new name (name=...).")
    if last.is_file():
        import zipfile

        if not zipfile.is_zipfile(last):  # a torch checkpoint is a zip file: truncated or garbage otherwise
            from transferkit.errors import CheckpointError
            from transferkit.training.checkpoint import damaged_last_advice

            raise CheckpointError(str(last), "not a complete checkpoint file (truncated or overwritten)",
                                  damaged_last_advice(path / "checkpoints", str(last)))
    if (path / CONFIG).is_file():
        try:
            changes = config_changes((path / CONFIG).read_text(encoding="utf-8"), cfg)
        except (ConfigError, yaml.YAMLError) as e:
            raise RunFolderError(f"--resume: the run's saved config {path / CONFIG} cannot be read by this "
                                 f"version of transferkit ({e}). Start a new run (name=...) or --overwrite.") from None
        unsafe = {k: v for k, v in changes.items() if k not in SAFE_ON_RESUME}
        if unsafe:
            lines = "\n".join(f"  - {k}: {a!r} in the run, {b!r} now" for k, (a, b) in unsafe.items())
            raise RunFolderError(
                f"--resume: the config differs from the run's ({path / CONFIG}) in {len(unsafe)} field(s):\n"
                f"{lines}\nA resumed run must be the run that was started: undo these changes, or start a new "
                f"run (name=...) or replace this one (--overwrite). Only {', '.join(sorted(SAFE_ON_RESUME))} "
                "may change on --resume."
            )
        rf.safe_changes = changes
    return rf
