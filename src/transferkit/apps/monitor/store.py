"""The monitor's database, through SQLAlchemy: every text with its time and window, every model's prediction
and score, the windows already judged, the alerts with the texts that caused them, webhook deliveries and the
watched files already ingested. SQLite by default (WAL, so the dashboard reads while the monitor writes); a
PostgreSQL URL works the same (only portable SQL is used: the window of a text is a stored column, not a
dialect's date function)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint, create_engine, event,
                        func, select, update)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from transferkit.errors import ConfigError

EPOCH_MONDAY = datetime(1970, 1, 5)  # weekly windows start on Mondays; shorter ones at the top of their unit


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class TextRow(Base):
    __tablename__ = "texts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uid: Mapped[str] = mapped_column(String(128), unique=True)
    ts: Mapped[datetime] = mapped_column(DateTime, index=True)
    window_start: Mapped[datetime] = mapped_column(DateTime, index=True)
    source: Mapped[str] = mapped_column(String(512))
    text: Mapped[str] = mapped_column(Text)
    ingested_at: Mapped[datetime] = mapped_column(DateTime)


class Prediction(Base):
    __tablename__ = "predictions"
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    label: Mapped[str] = mapped_column(String(128), index=True)
    score: Mapped[float] = mapped_column(Float)


class JudgedWindow(Base):
    __tablename__ = "windows"
    start: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    end: Mapped[datetime] = mapped_column(DateTime)
    count: Mapped[int] = mapped_column(Integer)
    judged_at: Mapped[datetime] = mapped_column(DateTime)


class AlertRow(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    window_start: Mapped[datetime] = mapped_column(DateTime)
    window_end: Mapped[datetime] = mapped_column(DateTime)
    last_window_end: Mapped[datetime] = mapped_column(DateTime)  # the condition held through this window
    windows: Mapped[int] = mapped_column(Integer, default=1)
    value: Mapped[float] = mapped_column(Float)
    baseline: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)
    fired_at: Mapped[datetime] = mapped_column(DateTime)


class AlertText(Base):
    __tablename__ = "alert_texts"
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), primary_key=True)
    text_id: Mapped[int] = mapped_column(ForeignKey("texts.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer)


class Delivery(Base):
    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # HTTP status of the last attempt
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class IngestedFile(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("path", "size", "mtime"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(2048))
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(DateTime)


def utc(ts: datetime) -> datetime:
    """Naive UTC (what the database stores): aware times are converted, naive ones taken as UTC."""
    return ts.astimezone(timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def window_of(ts: datetime, span: timedelta) -> datetime:
    """Start of the window holding `ts`: windows are aligned on a Monday 00:00 UTC, so a 7d window is a
    calendar week and a 1d window a calendar day."""
    k = (utc(ts) - EPOCH_MONDAY) // span
    return EPOCH_MONDAY + k * span


@dataclass
class NewText:
    uid: str
    ts: datetime
    text: str
    source: str


@dataclass
class WindowStats:
    start: datetime
    end: datetime
    count: int
    #: (model, label) -> number of texts of the window predicted with that label
    labels: dict[tuple[str, str], int]
    #: model -> mean score of its predictions (confidence)
    confidence: dict[str, float]

    def share(self, model: str, label: str) -> float:
        return self.labels.get((model, label), 0) / self.count if self.count else 0.0


class Store:
    def __init__(self, url: str, span: timedelta) -> None:
        kw: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.url = url
        self.engine: Engine = create_engine(url, **kw)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        self.span = span
        self._check_window()

    def _check_window(self) -> None:
        with self.session.begin() as s:
            row = s.get(Meta, "window_seconds")
            seconds = str(int(self.span.total_seconds()))
            if row is None:
                s.add(Meta(key="window_seconds", value=seconds))
            elif row.value != seconds:
                raise ConfigError([f"window: the database {self.url} was filled with {int(row.value)} s windows, "
                                   f"not {seconds} s: use its window again, or another database / name"])

    def close(self) -> None:
        self.engine.dispose()

    # -- writing
    def known_uids(self, uids: list[str]) -> set[str]:
        out: set[str] = set()
        with self.session() as s:
            for i in range(0, len(uids), 500):
                out.update(s.scalars(select(TextRow.uid).where(TextRow.uid.in_(uids[i:i + 500]))))
        return out

    def add(self, texts: list[NewText], preds: dict[str, list[tuple[str, float]]]) -> list[int]:
        """Store texts and each model's (label, score) for them, in one transaction. Returns the new ids."""
        at = now()
        with self.session.begin() as s:
            rows = [TextRow(uid=t.uid, ts=utc(t.ts), window_start=window_of(t.ts, self.span), source=t.source,
                            text=t.text, ingested_at=at) for t in texts]
            s.add_all(rows)
            s.flush()
            s.add_all(Prediction(text_id=r.id, model=m, label=lab, score=float(sc))
                      for m, out in preds.items() for r, (lab, sc) in zip(rows, out))
            return [r.id for r in rows]

    def file_done(self, path: str, size: int, mtime: float) -> bool:
        with self.session() as s:
            n = s.scalar(select(func.count()).select_from(IngestedFile).where(
                IngestedFile.path == path, IngestedFile.size == size, IngestedFile.mtime == mtime))
            return bool(n)

    def mark_file(self, path: str, size: int, mtime: float, rows: int) -> None:
        with self.session.begin() as s:
            s.add(IngestedFile(path=path, size=size, mtime=mtime, rows=rows, ingested_at=now()))

    # -- windows
    def first_window(self) -> datetime | None:
        with self.session() as s:
            return s.scalar(select(func.min(TextRow.window_start)))

    def last_window(self) -> datetime | None:
        with self.session() as s:
            return s.scalar(select(func.max(TextRow.window_start)))

    def first_time(self) -> datetime | None:
        with self.session() as s:
            return s.scalar(select(func.min(TextRow.ts)))

    def watermark(self) -> datetime | None:
        with self.session() as s:
            return s.scalar(select(func.max(TextRow.ts)))

    def last_judged(self) -> datetime | None:
        with self.session() as s:
            return s.scalar(select(func.max(JudgedWindow.start)))

    def stats(self, start: datetime, end: datetime) -> list[WindowStats]:
        """Statistics of every window in [start, end] (windows without texts included, with count 0)."""
        counts: dict[datetime, int] = {}
        labels: dict[datetime, dict[tuple[str, str], int]] = defaultdict(dict)
        conf: dict[datetime, dict[str, float]] = defaultdict(dict)
        with self.session() as s:
            q = (select(TextRow.window_start, func.count()).where(TextRow.window_start.between(start, end))
                 .group_by(TextRow.window_start))
            counts = {w: n for w, n in s.execute(q)}
            q2 = (select(TextRow.window_start, Prediction.model, Prediction.label, func.count())
                  .join(Prediction, Prediction.text_id == TextRow.id)
                  .where(TextRow.window_start.between(start, end))
                  .group_by(TextRow.window_start, Prediction.model, Prediction.label))
            for w, m, lab, n in s.execute(q2):
                labels[w][(m, lab)] = n
            q3 = (select(TextRow.window_start, Prediction.model, func.avg(Prediction.score))
                  .join(Prediction, Prediction.text_id == TextRow.id)
                  .where(TextRow.window_start.between(start, end))
                  .group_by(TextRow.window_start, Prediction.model))
            for row in s.execute(q3):
                conf[row[0]][row[1]] = float(row[2])
        out, w = [], start
        while w <= end:
            out.append(WindowStats(w, w + self.span, counts.get(w, 0), labels.get(w, {}), conf.get(w, {})))
            w += self.span
        return out

    def mark_judged(self, w: WindowStats) -> None:
        with self.session.begin() as s:
            s.merge(JudgedWindow(start=w.start, end=w.end, count=w.count, judged_at=now()))

    # -- alerts
    def active_alert(self, rule: str, label: str | None, window_start: datetime) -> AlertRow | None:
        """The alert of this rule (and label) whose condition held through the window just before this one."""
        with self.session() as s:
            q = select(AlertRow).where(AlertRow.rule == rule, AlertRow.last_window_end == window_start)
            q = q.where(AlertRow.label.is_(None) if label is None else AlertRow.label == label)
            return s.scalars(q).first()

    def extend_alert(self, alert_id: int, window_end: datetime) -> None:
        with self.session.begin() as s:
            s.execute(update(AlertRow).where(AlertRow.id == alert_id).values(
                last_window_end=window_end, windows=AlertRow.windows + 1))

    def add_alert(self, row: AlertRow, evidence: list[int]) -> AlertRow:
        with self.session.begin() as s:
            s.add(row)
            s.flush()
            s.add_all(AlertText(alert_id=row.id, text_id=t, rank=i) for i, t in enumerate(evidence))
        return row

    def evidence_for_label(self, w: WindowStats, model: str, label: str, n: int) -> list[int]:
        with self.session() as s:
            q = (select(TextRow.id).join(Prediction, Prediction.text_id == TextRow.id)
                 .where(TextRow.window_start == w.start, Prediction.model == model, Prediction.label == label)
                 .order_by(Prediction.score.desc(), TextRow.id).limit(n))
            return list(s.scalars(q))

    def latest_texts(self, w: WindowStats, n: int) -> list[int]:
        with self.session() as s:
            q = (select(TextRow.id).where(TextRow.window_start == w.start)
                 .order_by(TextRow.ts.desc(), TextRow.id.desc()).limit(n))
            return list(s.scalars(q))

    def alerts(self, limit: int = 100, alert_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first (or the one alert `alert_id`), each with its evidence texts and their predictions."""
        with self.session() as s:
            q = select(AlertRow).order_by(AlertRow.window_start.desc(), AlertRow.id.desc()).limit(limit)
            rows = list(s.scalars(q if alert_id is None else q.where(AlertRow.id == alert_id)))
            ids = [r.id for r in rows]
            ev: dict[int, list[dict[str, Any]]] = defaultdict(list)
            if ids:
                qe = (select(AlertText.alert_id, TextRow).join(TextRow, TextRow.id == AlertText.text_id)
                      .where(AlertText.alert_id.in_(ids)).order_by(AlertText.alert_id, AlertText.rank))
                found = [(int(r[0]), r[1]) for r in s.execute(qe)]
                preds: dict[int, dict[str, Any]] = defaultdict(dict)
                tids = [t.id for _, t in found]
                for p in s.scalars(select(Prediction).where(Prediction.text_id.in_(tids))):
                    preds[p.text_id][p.model] = {"label": p.label, "score": round(p.score, 4)}
                for aid, t in found:
                    ev[aid].append({"id": t.id, "time": t.ts.isoformat(), "text": t.text, "source": t.source,
                                    "predictions": preds[t.id]})
            deliveries: dict[int, list[dict[str, Any]]] = defaultdict(list)
            if ids:
                for d in s.scalars(select(Delivery).where(Delivery.alert_id.in_(ids))):
                    deliveries[d.alert_id].append({"url": d.url, "delivered": d.delivered, "status": d.status,
                                                   "attempts": d.attempts, "error": d.error})
            return [alert_dict(r, ev[r.id], deliveries[r.id]) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            return {"texts": s.scalar(select(func.count()).select_from(TextRow)) or 0,
                    "alerts": s.scalar(select(func.count()).select_from(AlertRow)) or 0,
                    "windows_judged": s.scalar(select(func.count()).select_from(JudgedWindow)) or 0}

    # -- webhook deliveries
    def new_delivery(self, alert_id: int, url: str) -> int:
        with self.session.begin() as s:
            d = Delivery(alert_id=alert_id, url=url, attempts=0, delivered=False, updated_at=now())
            s.add(d)
            s.flush()
            return d.id

    def record_delivery(self, delivery_id: int, status: int | None, attempts: int, delivered: bool,
                        error: str | None) -> None:
        with self.session.begin() as s:
            s.execute(update(Delivery).where(Delivery.id == delivery_id).values(
                status=status, attempts=attempts, delivered=delivered, error=error, updated_at=now()))

    def pending_deliveries(self) -> list[tuple[int, int, str]]:
        """(delivery id, alert id, url) of deliveries not yet made (the monitor stopped before them)."""
        with self.session() as s:
            return [(d.id, d.alert_id, d.url) for d in s.scalars(select(Delivery).where(
                Delivery.delivered.is_(False), Delivery.error.is_(None)))]

    def alert_payload(self, alert_id: int) -> dict[str, Any]:
        found = self.alerts(alert_id=alert_id)
        if not found:
            raise KeyError(alert_id)
        return found[0]


def alert_dict(r: AlertRow, evidence: Iterable[dict[str, Any]] = (), deliveries: Iterable[dict] = ()) -> dict:
    return {"id": r.id, "rule": r.rule, "kind": r.kind, "model": r.model, "label": r.label,
            "window_start": r.window_start.isoformat(), "window_end": r.window_end.isoformat(),
            "last_window_end": r.last_window_end.isoformat(), "windows": r.windows, "value": round(r.value, 4),
            "baseline": round(r.baseline, 4), "count": r.count, "message": r.message,
            "fired_at": r.fired_at.isoformat(), "evidence": list(evidence), "deliveries": list(deliveries)}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
