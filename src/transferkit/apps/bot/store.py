"""The bot's conversation log, through SQLAlchemy (SQLite file bot.db in the bot's folder by default): every turn
with its session, the message, whether the previous turn was used as context, the intent, the scores, the matched
question, the reply and whether it was handed off to a human."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, String, Text, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Turn(Base):
    __tablename__ = "turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session: Mapped[str] = mapped_column(String(128), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime)
    message: Mapped[str] = mapped_column(Text)
    used_context: Mapped[bool] = mapped_column(Boolean, default=False)
    intent: Mapped[str | None] = mapped_column(String(128), nullable=True)
    intent_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    score: Mapped[float] = mapped_column(Float)
    matched_question: Mapped[str | None] = mapped_column(Text, nullable=True)
    reply: Mapped[str] = mapped_column(Text)
    handed_off: Mapped[bool] = mapped_column(Boolean, index=True)


COLUMNS = ("id", "session", "ts", "message", "used_context", "intent", "intent_score", "score", "matched_question",
           "reply", "handed_off")


class Store:
    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(url)
        if url.startswith("sqlite"):
            @event.listens_for(self.engine, "connect")
            def _wal(conn: Any, _: Any) -> None:
                conn.execute("PRAGMA journal_mode=WAL")
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def add(self, **row: Any) -> int:
        with self.session() as s, s.begin():
            t = Turn(ts=datetime.now(timezone.utc).replace(tzinfo=None), **row)
            s.add(t)
            s.flush()
            return int(t.id)

    def turns(self, session: str | None = None, handed_off: bool | None = None) -> list[dict[str, Any]]:
        q = select(Turn).order_by(Turn.id)
        if session is not None:
            q = q.where(Turn.session == session)
        if handed_off is not None:
            q = q.where(Turn.handed_off == handed_off)
        with self.session() as s:
            return [{c: getattr(t, c) for c in COLUMNS} for t in s.scalars(q)]

    def close(self) -> None:
        self.engine.dispose()
