"""The monitor: classify incoming texts with every configured model, store them, judge each window once it has
closed, and send what fires to the alert log and the webhooks.

Writes happen on one thread at a time (a lock): the ingest endpoint, the folder watcher and a replay may all
call `ingest`. Everything the monitor knows is in the database, so a monitor that is killed and started again
goes on where it was: texts already stored are skipped (their uid), windows already judged are not judged
again, an alert whose condition still holds is extended rather than fired twice, and webhook deliveries that
had not gone out are sent at start.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from transferkit.apps.monitor import rules as R
from transferkit.apps.monitor.settings import MonitorConfig, Webhook
from transferkit.apps.monitor.store import AlertRow, NewText, Store, alert_dict, now
from transferkit.errors import ModelError

log = logging.getLogger("transferkit.monitor")


class Classifier:
    """One model of the monitor: texts -> (label, score). A Predictor of a run folder by default."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        labels = getattr(predictor.task, "labels", None)
        if not labels or getattr(predictor.task, "multilabel", False) or not hasattr(predictor.task, "pooling"):
            raise ModelError("the monitor classifies each text with a single-label classification model; this one "
                             f"is a '{type(predictor.task).__name__}'")
        self.labels = list(labels)

    def __call__(self, texts: list[str], batch_size: int) -> list[tuple[str, float]]:
        rows = self.predictor.predict(texts, batch_size=batch_size)
        return [(str(r["label"]), float(r["score"])) for r in rows]


def load_classifiers(cfg: MonitorConfig) -> dict[str, Classifier]:
    from transferkit.deploy.predictor import Predictor

    out = {}
    for name, ref in cfg.models.items():
        path: Any = ref.path
        if str(path).startswith("models:"):
            from transferkit import registry

            path = registry.resolve("models:/" + str(path)[len("models:"):].lstrip("/"))
        try:
            out[name] = Classifier(Predictor.load(path, int8=ref.int8))
        except ModelError as e:
            raise ModelError(f"models.{name}: {e}") from None
    return out


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    alerts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def merge(self, other: IngestResult) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.alerts += other.alerts
        self.seconds += other.seconds


class Notifier:
    """Alerts to the log file (a JSON line each) and to webhooks (JSON POST, optional HMAC signature, retries
    with back-off; each delivery recorded in the database, so one cut short by a stop is retried at start).
    Webhooks are sent from a worker thread: a slow receiver never holds up ingestion."""

    def __init__(self, cfg: MonitorConfig, store: Store) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.store = store
        self.hooks = list(cfg.alerts.webhooks)
        log_path = cfg.alerts.log
        self.log_path = None if log_path is None else (
            Path(log_path) if Path(log_path).is_absolute() else cfg.folder / log_path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transferkit-webhooks")
        self._pending: list[Any] = []
        for did, aid, url in store.pending_deliveries():
            hook = next((h for h in self.hooks if h.url == url), None)
            if hook is not None:
                self._pending.append(self._pool.submit(self._deliver, did, aid, hook))

    def send(self, alert: dict[str, Any]) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({k: v for k, v in alert.items() if k != "deliveries"}, ensure_ascii=False) + "\n")
        log.warning("ALERT %s: %s (window %s)", alert["rule"], alert["message"], alert["window_start"][:10])
        for hook in self.hooks:
            did = self.store.new_delivery(alert["id"], hook.url)
            self._pending.append(self._pool.submit(self._deliver, did, alert["id"], hook))

    def _deliver(self, delivery_id: int, alert_id: int, hook: Webhook) -> None:
        import httpx

        payload = self.store.alert_payload(alert_id)
        payload.pop("deliveries", None)
        body = json.dumps({"event": "alert", "alert": payload}, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if hook.secret:
            sig = hmac.new(hook.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Transferkit-Signature"] = f"sha256={sig}"
        status, error = None, None
        for attempt in range(1, hook.retries + 2):
            try:
                r = httpx.post(hook.url, content=body, headers=headers, timeout=hook.timeout_s)
                status = r.status_code
                if 200 <= r.status_code < 300:
                    self.store.record_delivery(delivery_id, status, attempt, True, None)
                    return
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"
            if attempt <= hook.retries:
                time.sleep(0.5 * 2 ** (attempt - 1))
        log.error("webhook %s: alert %s not delivered after %s attempts (%s)", hook.url, alert_id, hook.retries + 1,
                  error)
        self.store.record_delivery(delivery_id, status, hook.retries + 1, False, error)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every webhook delivery so far has been made (or given up)."""
        for f in list(self._pending):
            f.result(timeout=timeout)
        self._pending = [f for f in self._pending if not f.done()]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Monitor:
    def __init__(self, cfg: MonitorConfig, classifiers: dict[str, Classifier] | None = None) -> None:
        self.cfg = cfg
        cfg.folder.mkdir(parents=True, exist_ok=True)
        self.classifiers = classifiers if classifiers is not None else load_classifiers(cfg)
        missing = set(cfg.models) - set(self.classifiers)
        if missing:
            raise ModelError(f"no classifier for models {sorted(missing)}")
        self.labels = {name: c.labels for name, c in self.classifiers.items()}
        for r in cfg.rules:
            if r.model and r.label not in (None, "*") and r.label not in self.labels[r.model]:
                from transferkit.errors import ConfigError, did_you_mean

                raise ConfigError([f"rules: '{r.name}' watches label '{r.label}', which model '{r.model}' does not "
                                   f"predict.{did_you_mean(str(r.label), self.labels[r.model])} Its labels: "
                                   f"{', '.join(self.labels[r.model])}"])
        self.span = cfg.window_span
        self.store = Store(cfg.database_url(), self.span)
        self.notifier = Notifier(cfg, self.store)
        self.lock = threading.RLock()
        #: called with each new alert (the dashboard's live updates)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []

    def close(self) -> None:
        self.notifier.close()
        self.store.close()

    # -- ingest
    def ingest(self, texts: Iterable[NewText], progress: Callable[[int], None] | None = None,
               judge: bool = True) -> IngestResult:
        """Classify and store new texts (already-stored uids are skipped), in batches committed one by one;
        then judge the windows that have closed."""
        res = IngestResult()
        t0 = time.perf_counter()
        chunk: list[NewText] = []
        size = max(self.cfg.ingest.batch_size * 4, 64)
        with self.lock:
            for t in texts:
                chunk.append(t)
                if len(chunk) >= size:
                    self._store_chunk(chunk, res, progress)
                    chunk = []
            if chunk:
                self._store_chunk(chunk, res, progress)
            if judge:
                res.alerts += self.advance(self._horizon())
        res.seconds = time.perf_counter() - t0
        return res

    def _store_chunk(self, chunk: list[NewText], res: IngestResult, progress: Callable[[int], None] | None) -> None:
        seen: dict[str, NewText] = {}
        for t in chunk:
            seen.setdefault(t.uid, t)
        known = self.store.known_uids(list(seen))
        new = [t for u, t in seen.items() if u not in known]
        res.duplicates += len(chunk) - len(new)
        if new:
            texts = [t.text for t in new]
            preds = {name: c(texts, self.cfg.ingest.batch_size) for name, c in self.classifiers.items()}
            self.store.add(new, preds)
            res.stored += len(new)
        if progress is not None:
            progress(len(chunk))

    def _horizon(self) -> datetime | None:
        """The time up to which windows may close: the latest text's (event clock), or now (wall clock)."""
        mark = self.store.watermark()
        if self.cfg.clock == "wall":
            mark = max(mark, now()) if mark else now()
        return mark

    # -- windows and rules
    def advance(self, horizon: datetime | None, final: bool = False) -> list[dict[str, Any]]:
        """Judge, in order, every window not yet judged that ended `lateness` or more before `horizon` (all
        windows up to the last one with texts when `final`: the end of a replay)."""
        with self.lock:
            first = self.store.first_window()
            if first is None or horizon is None:
                return []
            # the feed began inside its first window (a Thursday of a weekly window): that window is partial,
            # so it is neither judged nor part of any baseline
            first_ts = self.store.first_time()
            if first_ts is not None and first_ts > first:
                first = first + self.span
            last_judged = self.store.last_judged()
            start = first if last_judged is None else max(first, last_judged + self.span)
            fired: list[dict[str, Any]] = []
            if final:
                last = self.store.last_window()
                end_limit = (last + self.span) if last else start
            else:
                end_limit = horizon - self.cfg.lateness_span
            depth = max((r.baseline_windows for r in self.cfg.rules), default=1)
            w = start
            while w + self.span <= end_limit:
                stats = self.store.stats(max(first, w - depth * self.span), w)
                current, history = stats[-1], stats[:-1]
                fired += self._judge(current, history)
                self.store.mark_judged(current)
                w += self.span
            return fired

    def _judge(self, current: Any, history: list[Any]) -> list[dict[str, Any]]:
        out = []
        for rule in self.cfg.rules:
            findings = {f.label: f for f in R.judge(rule, current, history, self.labels)}
            for label, f in findings.items():
                active = self.store.active_alert(rule.name, label, current.start)
                if active is not None:  # still holding: the same alert, one window longer
                    self.store.extend_alert(active.id, current.end)
                    continue
                if rule.kind == "share_rise":
                    assert rule.model is not None and label is not None
                    evidence = self.store.evidence_for_label(current, rule.model, label, self.cfg.alerts.evidence)
                else:
                    evidence = self.store.latest_texts(current, self.cfg.alerts.evidence)
                row = self.store.add_alert(AlertRow(
                    rule=rule.name, kind=rule.kind, model=rule.model, label=label, window_start=current.start,
                    window_end=current.end, last_window_end=current.end, windows=1, value=f.value,
                    baseline=f.baseline, count=current.count, message=f.message, fired_at=now()), evidence)
                alert = self.store.alert_payload(row.id)
                self.notifier.send(alert)
                for fn in self.listeners:
                    fn(alert)
                out.append(alert)
        return out

    # -- reading
    def summary(self) -> dict[str, Any]:
        """Every window with its count, label shares and mean confidence per model (the dashboard's data)."""
        first, last = self.store.first_window(), self.store.last_window()
        windows = []
        if first is not None and last is not None:
            judged = self.store.last_judged()
            for s in self.store.stats(first, last):
                windows.append({
                    "start": s.start.isoformat(), "end": s.end.isoformat(), "count": s.count,
                    "closed": judged is not None and s.start <= judged,
                    "shares": {m: {lab: round(s.share(m, lab), 4) for lab in labs} for m, labs in self.labels.items()},
                    "confidence": {m: round(v, 4) for m, v in s.confidence.items()}})
        wm = self.store.watermark()
        return {"window": self.cfg.window, "models": self.labels, "windows": windows,
                "totals": self.store.counts(), "watermark": wm.isoformat() if wm else None,
                "rules": [r.model_dump() for r in self.cfg.rules]}


__all__ = ["Monitor", "Classifier", "IngestResult", "alert_dict"]
