"""Pretraining sequences: tokenize documents once (with word boundaries for whole-word masking), then pack.

- Masked LM alone: the whole token stream (documents separated by [SEP]) is cut into sequences of exactly
  `max_length` tokens, so no position is padding except in the very last sequence.
- With a sentence-pair objective (BERT's NSP, ALBERT's SOP): segments of one document are accumulated up
  to the length budget and split into A and B at a sentence boundary (or, for a single long segment, at a
  token). NSP replaces B with text of another document half of the time; SOP swaps A and B half of the time.

Word ids: every token carries the index of the word it belongs to (-1 for special tokens), so masking can
select whole words. English words are the tokenizer's pre-tokenized words (all the WordPiece pieces of a
word share one id); Chinese words come from jieba (BERT tokenizers split Chinese into single characters,
so a jieba word of three characters is three tokens with one word id).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from transferkit.data.corpus import Document

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass
class Segment:
    ids: list[int]
    words: list[int]  # word index within the segment, one per token


def has_chinese(text: str) -> bool:
    return bool(_CJK.search(text))


def jieba_word_index(text: str) -> list[int]:
    """For each character of `text`, the index of the jieba word that contains it."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    index = [0] * len(text)
    for k, (_, start, end) in enumerate(jieba.tokenize(text)):
        for c in range(start, end):
            index[c] = k
    return index


def tokenize_documents(tokenizer: Any, docs: list[Document], chinese_words: str = "jieba",
                       batch: int = 2000) -> list[list[Segment]]:
    """Token ids and word ids of every segment of every document (no special tokens)."""
    flat = [s for d in docs for s in d]
    segments: list[Segment] = []
    for start in range(0, len(flat), batch):
        texts = flat[start:start + batch]
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                        verbose=False)
        for k, text in enumerate(texts):
            ids = enc["input_ids"][k]
            if chinese_words == "jieba" and has_chinese(text):
                char_word = jieba_word_index(text)
                words, last = [], 0
                for a, _ in enc["offset_mapping"][k]:
                    last = char_word[a] if a < len(char_word) else last
                    words.append(last)
            else:
                words = [w if w is not None else 0 for w in enc.word_ids(k)]
            segments.append(Segment(ids, words))
    out, i = [], 0
    for d in docs:
        out.append([seg for seg in segments[i:i + len(d)] if seg.ids])
        i += len(d)
    return [d for d in out if d]


def _feature(ids: list[int], words: list[int], types: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    f = {"input_ids": ids, "word_ids": words}
    if types is not None:
        f["token_type_ids"] = types
    f.update(extra)
    return f


def pack_stream(docs: list[list[Segment]], max_length: int, cls_id: int, sep_id: int) -> list[dict[str, Any]]:
    """[CLS] + exactly max_length-2 tokens of the running stream + [SEP]; documents joined by [SEP]."""
    cap = max_length - 2
    feats: list[dict[str, Any]] = []
    ids: list[int] = []
    words: list[int] = []
    next_word = 0

    def flush() -> None:
        nonlocal ids, words
        feats.append(_feature([cls_id] + ids + [sep_id], [-1] + words + [-1]))
        ids, words = [], []

    for d, doc in enumerate(docs):
        if d and ids:  # document boundary inside a sequence
            ids.append(sep_id)
            words.append(-1)
            if len(ids) == cap:
                flush()
        for seg in doc:
            base = next_word
            for t, w in zip(seg.ids, seg.words):
                ids.append(t)
                words.append(base + w)
                next_word = max(next_word, base + w + 1)
                if len(ids) == cap:
                    flush()
    if ids:
        flush()
    # word ids restart at 0 in every sequence (they only need to be equal within a word)
    for f in feats:
        seen: dict[int, int] = {}
        f["word_ids"] = [-1 if w < 0 else seen.setdefault(w, len(seen)) for w in f["word_ids"]]
    return feats


def _join(segs: list[Segment]) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    words: list[int] = []
    base = 0
    for s in segs:
        ids.extend(s.ids)
        words.extend(base + w for w in s.words)
        base = (max(words) + 1) if words else 0
    return ids, words


def make_pairs(docs: list[list[Segment]], max_length: int, cls_id: int, sep_id: int, objective: str,
               seed: int) -> list[dict[str, Any]]:
    """BERT-style sentence pairs with a balanced binary label (`pair_label`): for NSP 0 = B follows A,
    1 = B is from another document; for SOP 0 = in order, 1 = swapped."""
    rng = random.Random(seed)
    target = max_length - 3
    feats: list[dict[str, Any]] = []
    for d, doc in enumerate(docs):
        chunk: list[Segment] = []
        size = 0
        for j, seg in enumerate(doc):
            chunk.append(seg)
            size += len(seg.ids)
            if j < len(doc) - 1 and size < target:
                continue
            a_ids, a_w, b_ids, b_w = _split_chunk(chunk, rng)
            label = int(rng.random() < 0.5)
            if label and objective == "nsp" and len(docs) > 1:
                other = rng.randrange(len(docs) - 1)
                other += other >= d
                start = rng.randrange(len(docs[other]))
                b_ids, b_w = _join(docs[other][start:])
            elif label and objective == "sop":
                a_ids, a_w, b_ids, b_w = b_ids, b_w, a_ids, a_w
            elif label:  # nsp with a single document: nothing to sample from
                label = 0
            while len(a_ids) + len(b_ids) > target:  # truncate the longer side
                if len(a_ids) > len(b_ids):
                    a_ids, a_w = a_ids[:-1], a_w[:-1]
                else:
                    b_ids, b_w = b_ids[:-1], b_w[:-1]
            if a_ids and b_ids:
                shift = (max(a_w) + 1) if a_w else 0
                ids = [cls_id] + a_ids + [sep_id] + b_ids + [sep_id]
                words = [-1] + a_w + [-1] + [shift + w for w in b_w] + [-1]
                types = [0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)
                feats.append(_feature(ids, words, types, pair_label=label))
            chunk, size = [], 0
    return feats


def _split_chunk(chunk: list[Segment], rng: random.Random):
    if len(chunk) >= 2:
        cut = rng.randrange(1, len(chunk))
        a_ids, a_w = _join(chunk[:cut])
        b_ids, b_w = _join(chunk[cut:])
        return a_ids, a_w, b_ids, b_w
    ids, words = _join(chunk)
    if len(ids) < 2:
        return ids, words, [], []
    cut = rng.randrange(1, len(ids))
    b_w = words[cut:]
    return ids[:cut], words[:cut], ids[cut:], [w - b_w[0] for w in b_w]
