"""Checks that need no model loaded and no data read: the model reference, its weights, vocabulary and
positions, the data paths, the output folder. `transferkit config validate` runs them (so it says 'ok' only
when the run can start). finetune calls the same check functions (`check_checkpoint`, `check_writable`) before
it reads any data; data paths it checks as it reads them, with the readers' own messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.errors import TransferkitError


#: built-in datasets of every task (data.builtin and the tasks' own readers); a unit test keeps it complete
BUILTIN_NAMES = ("rotten_tomatoes", "bbc_news", "chinese_reviews", "peoples_daily_ner", "bbc_relations", "bbc_qa",
                 "bbc_headlines", "tatoeba_en_zh", "tatoeba_zh_en", "chatterbot_en", "chatterbot_zh",
                 "guardian_headlines", "chatterbot_intents_en", "chatterbot_intents_zh")


def _data_problems(ref: str | None, key: str) -> list[str]:
    if not ref or ref in BUILTIN_NAMES:
        return []
    p = Path(ref).expanduser()
    if p.exists():
        return []
    first = ref.split("/")[0]
    local = ref.startswith((".", "/", "~")) or ref.count("/") != 1 or Path(first).is_dir() or p.suffix != ""
    if local:
        return [f"data -> {key}: '{ref}' does not exist (working directory: {Path.cwd()})"]
    return []  # owner/name: a hub dataset, checked when it is loaded (needs internet)


def problems(cfg: Any) -> list[str]:
    """Every problem found, as messages; [] when the run can start."""
    from transferkit.modeling import load as mload
    from transferkit.recipes import rundir

    out: list[str] = []
    model = cfg.model
    if model.path:
        try:
            mload.check_checkpoint(mload.resolve(model.path), init=model.init, max_length=model.max_length,
                                   size=model.size)
        except TransferkitError as e:
            out.append(str(e))
    data = getattr(cfg, "data", None)
    if data is not None:
        for key in ("source", "train", "validation", "test"):
            out += _data_problems(getattr(data, key), key)
    try:
        rundir.check_writable(cfg.run_dir)
    except TransferkitError as e:
        out += getattr(e, "problems", [str(e)])
    return out
