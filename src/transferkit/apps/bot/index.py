"""The FAQ answer index: (question, intent, answers) entries from chatterbot-corpus, their questions embedded by a
sentence encoder (mean pooling, `evaluation.zeroshot.embed`) and searched by cosine: exactly (numpy) below a size
threshold, approximately with hnswlib above it. The TF-IDF retriever is the baseline it is measured against."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import ConfigError, ModelError

log = logging.getLogger("transferkit.bot")

Embedder = Callable[[list[str]], np.ndarray]


@dataclass
class Entry:
    question: str
    intent: str
    answers: list[str] = field(default_factory=list)


def faq_entries(rows: Iterable[tuple[str, str, str]]) -> list[Entry]:
    """(intent, question, answer) rows -> one entry per distinct question (its first intent; every answer it
    has, in order, without repeats)."""
    by_q: dict[str, Entry] = {}
    for intent, q, a in rows:
        e = by_q.setdefault(q, Entry(q, intent, []))
        if a not in e.answers:
            e.answers.append(a)
    return list(by_q.values())


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


class EncoderEmbedder:
    """A transformers encoder as a sentence embedder: mean of the last hidden states, L2-normalised."""

    def __init__(self, ref: str, max_length: int = 64, batch_size: int = 64) -> None:
        from transformers import AutoModel

        from transferkit.modeling.load import load_tokenizer, resolve

        path = resolve(ref)
        self.ref, self.max_length, self.batch_size = ref, max_length, batch_size
        self.tokenizer = load_tokenizer(path)
        try:
            self.model = AutoModel.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ModelError(f"sentence encoder '{ref}' cannot be loaded: {str(e).strip().splitlines()[0]}") from None
        self.model.eval()

    def __call__(self, texts: list[str]) -> np.ndarray:
        from transferkit.evaluation.zeroshot import embed

        return normalize(embed(self.model, self.tokenizer, list(texts), self.max_length, self.batch_size))


class VectorIndex:
    """Cosine search over L2-normalised vectors: exact (one matrix product) or hnswlib (inner product)."""

    def __init__(self, vectors: np.ndarray, kind: str = "exact", m: int = 16, ef: int = 100) -> None:
        self.vectors = normalize(vectors)
        self.kind = kind
        self.hnsw: Any = None
        if kind == "hnsw":
            hnswlib = _hnswlib()
            self.hnsw = hnswlib.Index(space="ip", dim=self.vectors.shape[1])
            self.hnsw.init_index(max_elements=max(len(self.vectors), 1), ef_construction=max(ef, 100), M=m,
                                 random_seed=42)
            self.hnsw.add_items(self.vectors, np.arange(len(self.vectors)), num_threads=1)
            self.hnsw.set_ef(ef)

    def __len__(self) -> int:
        return len(self.vectors)

    def similarities(self, queries: np.ndarray) -> np.ndarray:
        """(queries, entries) cosines, exactly (for evaluation; any kind)."""
        return normalize(queries) @ self.vectors.T

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines), each (queries, k), best first; ties in index order."""
        k = min(k, len(self))
        q = normalize(queries)
        if self.hnsw is not None:
            self.hnsw.set_ef(max(self.hnsw.ef, k))
            ids, dist = self.hnsw.knn_query(q, k=k, num_threads=1)
            return ids.astype(np.int64), (1.0 - dist).astype(np.float32)
        sims = q @ self.vectors.T
        ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(sims, ids, axis=1)


def _hnswlib() -> Any:
    try:
        import hnswlib
    except ImportError:
        raise ConfigError(["index.kind hnsw needs hnswlib: pip install -c constraints.txt hnswlib (or set index.kind: "
                          "exact)"]) from None
    return hnswlib


def choose_kind(kind: str, size: int, exact_below: int) -> str:
    if kind != "auto":
        return kind
    if size < exact_below:
        return "exact"
    try:
        _hnswlib()
    except ConfigError:
        log.warning("%s questions: hnswlib is not installed, so the index searches exactly (slower)", size)
        return "exact"
    return "hnsw"


class FaqIndex:
    """Entries + their question vectors; saved as a folder (entries.jsonl, vectors.npy, meta.json)."""

    def __init__(self, entries: list[Entry], vectors: np.ndarray, kind: str = "exact", m: int = 16, ef: int = 100,
                 meta: dict[str, Any] | None = None) -> None:
        if len(entries) != len(vectors):
            raise ValueError(f"{len(entries)} entries but {len(vectors)} vectors")
        self.entries = entries
        self.index = VectorIndex(vectors, kind, m, ef)
        self.meta = dict(meta or {}, kind=kind, size=len(entries), dim=int(np.asarray(vectors).shape[1]), m=m, ef=ef)
        self.position = {e.question: i for i, e in enumerate(entries)}

    @classmethod
    def build(cls, entries: list[Entry], embedder: Embedder, kind: str = "auto", exact_below: int = 20_000,
              m: int = 16, ef: int = 100, meta: dict[str, Any] | None = None) -> FaqIndex:
        vectors = embedder([e.question for e in entries])
        return cls(entries, vectors, choose_kind(kind, len(entries), exact_below), m, ef, meta)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "entries.jsonl", "w", encoding="utf-8") as f:
            for e in self.entries:
                f.write(json.dumps({"question": e.question, "intent": e.intent, "answers": e.answers},
                                   ensure_ascii=False) + "\n")
        np.save(folder / "vectors.npy", self.index.vectors)
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path) -> FaqIndex:
        if not (folder / "meta.json").is_file():
            raise ConfigError([f"no FAQ index in '{folder}': run `transferkit bot build CONFIG` first"])
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (folder / "entries.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
        entries = [Entry(r["question"], r["intent"], r["answers"]) for r in rows]
        return cls(entries, np.load(folder / "vectors.npy"), meta["kind"], meta.get("m", 16), meta.get("ef", 100),
                   {k: v for k, v in meta.items() if k not in ("kind", "size", "dim", "m", "ef")})


class TfidfIndex:
    """The baseline: TF-IDF vectors of the questions (words and word pairs for English; character 1-3-grams for
    Chinese, which has no spaces), cosine similarity."""

    def __init__(self, questions: Sequence[str], language: str) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if language == "zh":
            self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        else:
            self.vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                                              token_pattern=r"(?u)\b\w+\b")
        self.matrix = self.vectorizer.fit_transform(list(questions))

    def similarities(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray((self.vectorizer.transform(list(texts)) @ self.matrix.T).toarray(), dtype=np.float32)

    def search(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        sims = self.similarities(texts)
        ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(sims, ids, axis=1)


def ranks(scores: np.ndarray, relevant: Sequence[int]) -> list[int]:
    """1-based rank of each query's relevant entry in its row of scores (ties: the lower index ranks first)."""
    order = np.argsort(-np.asarray(scores), axis=1, kind="stable")
    return [int(np.nonzero(order[i] == r)[0][0]) + 1 for i, r in enumerate(relevant)]


def ranking_metrics(rank_list: Sequence[int], ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """recall@k (the relevant entry within the first k) and mean reciprocal rank, from 1-based ranks."""
    n = max(len(rank_list), 1)
    out = {f"recall@{k}": sum(r <= k for r in rank_list) / n for k in ks}
    out["mrr"] = sum(1.0 / r for r in rank_list) / n
    return out
