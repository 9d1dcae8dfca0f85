"""EDA (Wei & Zou 2019): synonym replacement, random insertion of a synonym, random swap, random deletion.
Each copy applies one operation, chosen among those with a non-zero rate. Synonyms come from English
WordNet (Debian's wordnet-base), the shipped Chinese table (jieba words), or a table file."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.augment_common import AugmentConfig, Augmenter, is_chinese, rng_for, words_of

#: function words that synonym replacement leaves alone
STOPWORDS = frozenset("""a an the and or but if then else of at by for with about against between into through
during before after above below to from up down in out on off over under again further once here there when
where why how all any both each few more most other some such no nor not only own same so than too very can
will just don should now i me my we our you your he him his she her it its they them their what which who whom
this that these those am is are was were be been being have has had do does did doing would could ought s t""".split())


class EDAConfig(AugmentConfig):
    method: ClassVar[str] = "eda"
    summary: ClassVar[str] = "easy data augmentation: synonym replacement, insertion, swap, deletion"

    synonym_replacement: float = Field(0.1, ge=0.0, le=1.0, description="Share of the words replaced by a synonym.")
    random_insertion: float = Field(0.1, ge=0.0, le=1.0, description="Share of the length inserted as synonyms of "
                                    "random words.")
    random_swap: float = Field(0.1, ge=0.0, le=1.0, description="Share of the length swapped in random pairs.")
    random_deletion: float = Field(0.1, ge=0.0, le=1.0, description="Probability that each word is deleted.")
    synonyms: Literal["auto", "wordnet", "chinese"] | str = Field(
        "auto", description="'auto' (WordNet for English, the shipped table for Chinese), 'wordnet', 'chinese', or "
        "the path of a synonym table (one group per line).")

    def cross_checks(self, run: Any) -> list[str]:
        problems = []
        if not any((self.synonym_replacement, self.random_insertion, self.random_swap, self.random_deletion)):
            problems.append("methods -> eda: every operation has rate 0; set at least one above 0")
        if self.synonyms not in ("auto", "wordnet", "chinese"):
            from pathlib import Path

            if not Path(self.synonyms).is_file():
                problems.append(f"methods -> eda -> synonyms: no synonym table at '{self.synonyms}' (give 'auto', "
                                "'wordnet', 'chinese' or the path of a file with one group of synonyms per line)")
        return problems


OPS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")


class EDA(Augmenter):
    Config = EDAConfig

    def _source(self, chinese: bool) -> Any:
        from transferkit.errors import ConfigError
        from transferkit.methods import synonyms

        choice = self.cfg.synonyms  # type: ignore[attr-defined]
        if choice == "auto":
            choice = "chinese" if chinese else "wordnet"
        if choice == "chinese":
            return synonyms.chinese()
        if choice == "wordnet":
            why = synonyms.missing_wordnet()
            if why:
                raise ConfigError([f"methods -> eda -> synonyms: {why}; or give a synonym table file"])
            return synonyms.wordnet()
        return synonyms.table(choice)

    def propose(self, texts: list[str], seed: int) -> list[list[tuple[str, str]]]:
        cfg: EDAConfig = self.cfg  # type: ignore[assignment]
        ops = [op for op in OPS if getattr(cfg, op) > 0]
        sources: dict[bool, Any] = {}
        out = []
        for i, text in enumerate(texts):
            words, joiner = words_of(text)
            zh = is_chinese(text)
            if zh not in sources:
                sources[zh] = self._source(zh)
            cands = []
            for k in range(cfg.copies):
                rng = rng_for(seed, i, k, "eda")
                op = rng.choice(ops)
                cands.append((joiner.join(apply(op, list(words), getattr(cfg, op), rng, sources[zh])), op))
            out.append(cands)
        return out


def apply(op: str, words: list[str], rate: float, rng: Any, synonyms: Any) -> list[str]:
    if not words:
        return words
    n = max(1, int(rate * len(words)))
    if op == "synonym_replacement":
        spots = [j for j, w in enumerate(words) if w.lower() not in STOPWORDS and synonyms(w)]
        rng.shuffle(spots)
        for j in spots[:n]:
            words[j] = rng.choice(synonyms(words[j]))
    elif op == "random_insertion":
        for _ in range(n):
            donors = [w for w in words if synonyms(w)]
            if not donors:
                break
            words.insert(rng.randrange(len(words) + 1), rng.choice(synonyms(rng.choice(donors))))
    elif op == "random_swap":
        pairs = min(n, len(words) // 2)  # disjoint pairs, so a later swap never undoes an earlier one
        spots = rng.sample(range(len(words)), 2 * pairs)
        for a, b in zip(spots[::2], spots[1::2]):
            words[a], words[b] = words[b], words[a]
    elif op == "random_deletion":
        kept = [w for w in words if rng.random() >= rate]
        words = kept or [rng.choice(words)]
    return words
