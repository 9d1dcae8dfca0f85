"""The model a service runs: loaded, warmed, identified by a version, and swapped for a new one without
dropping a request (a batch keeps the model it started with)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferkit.deploy.predictor import Predictor, model_dir_of

log = logging.getLogger("transferkit.serve")


def version_of(path: Path) -> str:
    """`<name>-<8 hex>`: the run's name and a digest of the weight files' names, sizes and times."""
    d = model_dir_of(path)
    files = sorted(p for p in Path(path).rglob("*") if p.is_file() and p.suffix in (".onnx", ".safetensors", ".bin"))
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    name = Path(path).resolve().name
    if name in ("model", "export"):
        name = Path(path).resolve().parent.name
    return f"{name}-{h.hexdigest()[:8]}" if files else f"{name}-{d.stat().st_mtime_ns % 10**8:08d}"


@dataclass
class Loaded:
    predictor: Predictor
    version: str
    path: Path
    loaded_at: float
    info: dict[str, Any] = field(default_factory=dict)


def warm_inputs(task: Any) -> list[Any]:
    name = getattr(task, "name", "")
    if name == "question_answering":
        return [{"question": "What is this?", "context": "This is a warm-up text."}]
    if name == "relation_extraction":
        return [{"text": "<e1>Ann</e1> works for <e2>Acme</e2>."}]
    return ["This is a warm-up text.", "A second, somewhat longer warm-up text to run a batch of two."]


def load(path: Path, int8: bool = False) -> Loaded:
    t = time.perf_counter()
    pred = Predictor.load(path, int8=int8) if int8 else Predictor.load(path, device="cpu")
    pred.predict(warm_inputs(pred.task))  # the first call builds kernels / ORT state: not on a user's request
    info: dict[str, Any] = {"task": pred.task.name, "backend": pred.backend, "path": str(path)}
    labels = getattr(pred.task, "types", None) or getattr(pred.task, "labels", None)
    if labels:
        info["labels"] = list(labels)
    metrics_file = _metrics_file(path)
    if metrics_file is not None:
        m = json.loads(metrics_file.read_text())
        info["metrics"] = {k: v for k, v in m.get("test", {}).items() if isinstance(v, (int, float))}
    v = version_of(path)
    log.info("model %s loaded and warmed in %.1fs (%s)", v, time.perf_counter() - t, pred.backend)
    return Loaded(pred, v, Path(path), time.time(), info)


def _metrics_file(path: Path) -> Path | None:
    p = Path(path)
    for cand in (p / "metrics.json", p.parent / "metrics.json"):
        if cand.is_file():
            return cand
    return None


class ModelHolder:
    """The current model; `swap` loads and warms the new one first, then replaces the reference, so batches
    already running finish on the old model and later ones run on the new."""

    def __init__(self, loaded: Loaded, int8: bool = False) -> None:
        self.current = loaded
        self.int8 = int8
        self._lock = threading.Lock()  # one swap at a time

    def swap(self, path: Path | None = None) -> tuple[Loaded, Loaded]:
        with self._lock:
            new = load(Path(path) if path else self.current.path, self.int8)
            old, self.current = self.current, new
            return old, new
