"""Synonym sources for augmentation, all offline: English WordNet 3.0 as Debian's `wordnet-base` and
`wordnet-sense-index` packages install it (/usr/share/wordnet, read through nltk), the Chinese synonym
table shipped with transferkit (resources/zh_synonyms.txt.gz, from cnsyn, Apache-2.0), or a table the user
gives (one group of synonyms per line, separated by spaces or tabs)."""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path
from typing import Protocol

WORDNET_DIR = Path(os.environ.get("TRANSFERKIT_WORDNET", "/usr/share/wordnet"))
ZH_TABLE = Path(__file__).resolve().parents[1] / "resources" / "zh_synonyms.txt.gz"
INSTALL_WORDNET = ("apt-get install wordnet-base wordnet-sense-index (Debian/Ubuntu; `make install` does it when "
                   "run as root)")

# The lexicographer files of WordNet 3.0 (lexnames(5WN)); nltk needs them as a `lexnames` file, which the
# Debian packages do not ship.
LEXNAMES = ("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
            "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
            "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
            "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
            "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
            "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
            "adj.ppl").split()
_SYNTACTIC = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


class Synonyms(Protocol):
    def __call__(self, word: str) -> list[str]: ...


def nltk_data_dir() -> Path:
    """An NLTK_DATA folder whose corpora/wordnet holds copies of the Debian files, plus the lexnames file."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "transferkit" / "nltk_data"
    root = base / "corpora" / "wordnet"
    root.mkdir(parents=True, exist_ok=True)
    for f in WORDNET_DIR.iterdir():
        link = root / f.name
        if f.is_file() and not link.exists():
            # a copy (36 MB, once): nltk 3.10 refuses symbolic links that leave its root and hard links
            import shutil

            tmp = link.with_name(f"{f.name}.{os.getpid()}.tmp")
            shutil.copyfile(f, tmp)
            tmp.replace(link)
    lex = root / "lexnames"
    if not lex.exists():
        tmp = lex.with_suffix(".tmp")
        tmp.write_text("".join(f"{i:02d}\t{name}\t{_SYNTACTIC[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)))
        tmp.replace(lex)
    return base


def missing_wordnet() -> str | None:
    """Why English WordNet cannot be used here, or None."""
    needed = ["index.noun", "data.noun", "index.sense"]
    absent = [n for n in needed if not (WORDNET_DIR / n).is_file()]
    if absent:
        return f"WordNet is not installed ({', '.join(str(WORDNET_DIR / n) for n in absent)} missing): {INSTALL_WORDNET}"
    try:
        import nltk  # noqa: F401
    except ImportError:
        return "reading WordNet needs nltk: pip install nltk"
    return None


@lru_cache(maxsize=1)
def wordnet() -> Synonyms:
    import warnings

    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    base = str(nltk_data_dir())
    if base not in nltk.data.path:
        nltk.data.path.insert(0, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        wn = WordNetCorpusReader(nltk.data.find("corpora/wordnet"), None)

    @lru_cache(maxsize=100_000)
    def lookup(word: str) -> tuple[str, ...]:
        found = {lemma.replace("_", " ") for s in wn.synsets(word.lower()) for lemma in s.lemma_names()}
        found.discard(word.lower())
        return tuple(sorted(found))

    return lambda word: list(lookup(word))


@lru_cache(maxsize=4)
def table(path: str) -> Synonyms:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    groups: dict[str, set[str]] = {}
    with opener(p, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for line in f:
            words = [w for w in line.split() if "(" not in w and "（" not in w]  # "影片(消歧义)": page titles
            if len(words) > 1:
                group = set(words)
                for w in words:
                    groups.setdefault(w, set()).update(group)
    return lambda word: sorted(groups.get(word, set()) - {word})


def chinese() -> Synonyms:
    return table(str(ZH_TABLE))
