"""The bot: one message in, one reply out.

1. Readings of the message: the message itself and, when it is short (a possible follow-up: at most
   `context.followup_max_words` words; for Chinese, twice as many characters) and the session has an earlier
   turn, that turn's reading and this message together ("tell me about the java course" + "how much is it"; a
   turn resolved with context passes its combined reading on, up to its last 3 messages).
2. Each reading is embedded and searched in the FAQ index (`index.candidates` x 4 nearest questions, then
   re-scored); the intent classifier gives P(intent | reading).
3. Score of a candidate = (1 - w) * cosine + w * P(candidate's intent), w = `answer.intent_weight`. The reading
   whose best candidate scores highest wins, except that the combined reading does not count when its best match
   is the question the previous turn matched: a follow-up asks something new ("how much is it" after "the java
   course"); otherwise "blorp" after a question would score like that question and repeat its answer instead of
   handing off.
4. Best score below the threshold: the reply is the hand-off message, and the turn is recorded as handed off.
   Otherwise the reply is the matched question's first answer.
Every turn goes to the database (store.py)."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transferkit.apps.bot.index import EncoderEmbedder, Embedder, Entry, FaqIndex
from transferkit.apps.bot.settings import BotConfig
from transferkit.apps.bot.store import Store
from transferkit.errors import ConfigError

log = logging.getLogger("transferkit.bot")
DEFAULT_THRESHOLD = 0.5
_CJK = re.compile(r"[\u3400-\u9fff]")


class IntentModel(Protocol):
    labels: list[str]

    def probabilities(self, texts: list[str]) -> np.ndarray: ...


class PredictorIntents:
    """A classification run folder as an intent model."""

    def __init__(self, run: str | Path) -> None:
        from transferkit.deploy.predictor import Predictor

        self.predictor = Predictor.load(run, device="cpu")
        self.labels = [str(x) for x in self.predictor.task.labels]

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.predictor.predict_scores(list(texts)), dtype=np.float32)


def intent_of_entries(entries: Sequence[Entry], labels: Sequence[str]) -> np.ndarray:
    """Column of each entry's intent among the classifier's labels (-1: not one of them)."""
    pos = {y: i for i, y in enumerate(labels)}
    return np.array([pos.get(e.intent, -1) for e in entries], dtype=np.int64)


def combine(cosines: np.ndarray, ids: np.ndarray, probs: np.ndarray | None, entry_intent: np.ndarray,
            weight: float) -> np.ndarray:
    """Scores of candidates `ids` (queries, k) with cosines (queries, k): (1 - w) cos + w P(entry's intent)."""
    if probs is None or weight == 0:
        return np.asarray(cosines, dtype=np.float32)
    cols = entry_intent[ids]
    p = np.where(cols >= 0, np.take_along_axis(probs, np.clip(cols, 0, None), axis=1), 0.0)
    return ((1 - weight) * cosines + weight * p).astype(np.float32)


def words(text: str) -> int:
    """Words of a message; a Chinese character counts as half a word."""
    cjk = len(_CJK.findall(text))
    return len(_CJK.sub(" ", text).split()) + (cjk + 1) // 2


def threshold_of(cfg: BotConfig) -> float:
    if cfg.answer.threshold is not None:
        return float(cfg.answer.threshold)
    path = cfg.folder / "threshold.json"
    if path.is_file():
        return float(json.loads(path.read_text(encoding="utf-8"))["threshold"])
    log.warning("no hand-off threshold chosen yet (`transferkit bot evaluate`); using %s", DEFAULT_THRESHOLD)
    return DEFAULT_THRESHOLD


def load_embedder(cfg: BotConfig) -> EncoderEmbedder:
    ref = cfg.encoder.path
    if ref == "intents":
        from transferkit.deploy.predictor import model_dir_of

        ref = str(model_dir_of(cfg.intents.run))
    return EncoderEmbedder(ref, cfg.encoder.max_length, cfg.encoder.batch_size)


class Bot:
    def __init__(self, cfg: BotConfig, index: FaqIndex, embedder: Embedder, intents: IntentModel | None,
                 store: Store | None, threshold: float) -> None:
        self.cfg, self.index, self.embedder, self.intents, self.store = cfg, index, embedder, intents, store
        self.threshold = threshold
        self.entry_intent = intent_of_entries(index.entries, intents.labels if intents else [])
        # session -> (the messages of each turn's reading, the question it matched)
        self.history: dict[str, deque[tuple[tuple[str, ...], str]]] = {}
        self.lock = threading.Lock()

    @classmethod
    def load(cls, cfg: BotConfig, store: bool = True) -> Bot:
        from transferkit.deploy.predictor import model_dir_of

        index = FaqIndex.load(cfg.folder / "index")
        try:
            model_dir_of(cfg.intents.run)
        except Exception:  # noqa: BLE001 - any reason it is not a model: say what to do
            raise ConfigError([f"intents.run '{cfg.intents.run}' holds no trained model: run `transferkit bot build "
                              "CONFIG` (it trains it from intents.config)"]) from None
        intents = PredictorIntents(cfg.intents.run)
        return cls(cfg, index, load_embedder(cfg), intents, Store(cfg.database_url()) if store else None,
                   threshold_of(cfg))

    def is_followup(self, message: str) -> bool:
        n = self.cfg.context.followup_max_words
        return n > 0 and words(message) <= n

    def readings(self, session: str, message: str) -> list[str]:
        prior = self.history.get(session)
        out = [message]
        if prior and self.is_followup(message):
            sep = "" if self.cfg.language == "zh" else " "
            out.append(sep.join(prior[-1][0] + (message,)))
        return out

    def rank(self, texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Candidate ids and scores (texts, k), best first, and the intent probabilities (texts, labels)."""
        pool = min(len(self.index.entries), max(4 * k, 20))
        ids, cos = self.index.index.search(self.embedder(texts), pool)
        probs = self.intents.probabilities(texts) if self.intents is not None else None
        scores = combine(cos, ids, probs, self.entry_intent, self.cfg.answer.intent_weight)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1), probs

    def reply(self, session: str, message: str) -> dict[str, Any]:
        message = message.strip()
        k = self.cfg.index.candidates
        with self.lock:
            texts = self.readings(session, message)
            ids, scores, probs = self.rank(texts, k)
            best = int(np.argmax(scores[:, 0]))
            prior = self.history.get(session)
            if best > 0 and prior and self.index.entries[int(ids[best, 0])].question == prior[-1][1]:
                best = 0
            entry = self.index.entries[int(ids[best, 0])]
            score = float(scores[best, 0])
            intent, intent_score = None, None
            if probs is not None and self.intents is not None:
                j = int(np.argmax(probs[best]))
                intent, intent_score = self.intents.labels[j], float(probs[best, j])
            handed_off = score < self.threshold
            text = self.cfg.handoff_text() if handed_off else entry.answers[0]
            h = self.history.setdefault(session, deque(maxlen=self.cfg.context.turns_kept))
            h.append(((h[-1][0] + (message,))[-3:] if best > 0 and h else (message,), entry.question))
            out = {"reply": text, "intent": intent, "intent_score": _r(intent_score), "score": _r(score),
                   "handed_off": handed_off, "threshold": _r(self.threshold), "used_context": best > 0,
                   "matched_question": entry.question,
                   "candidates": [{"question": self.index.entries[int(i)].question,
                                   "intent": self.index.entries[int(i)].intent, "score": _r(float(s))}
                                  for i, s in zip(ids[best], scores[best])]}
            if self.store is not None:
                out["turn"] = self.store.add(session=session, message=message, used_context=best > 0, intent=intent,
                                             intent_score=intent_score, score=score, matched_question=entry.question,
                                             reply=text, handed_off=handed_off)
            return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
