"""What the augmentation methods share: they see the training split only (the `train_examples` hook runs
on it before encoding; validation and test never pass through), add `copies` new examples per training
example with the original's label, drop copies that equal their original or an existing text, are seeded
per (seed, example, copy) so the result does not depend on order, each copies the original examples only
(never another augmenter's copies), and they report what they added."""

from __future__ import annotations

import logging
import random
import re
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import DATA, Method, MethodConfig

log = logging.getLogger(__name__)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def is_chinese(text: str) -> bool:
    chars = [c for c in text if not c.isspace()]
    return bool(chars) and sum(bool(_CJK.match(c)) for c in chars) / len(chars) > 0.3


def words_of(text: str) -> tuple[list[str], str]:
    """Words and the string that joins them back: jieba words for Chinese, whitespace tokens otherwise."""
    if is_chinese(text):
        import jieba

        return [w for w in jieba.lcut(text) if w.strip()], ""
    return text.split(), " "


def rng_for(seed: int, index: int, copy: int, salt: str) -> random.Random:
    return random.Random(f"{salt}:{seed}:{index}:{copy}")  # str seeds hash deterministically (sha512)


class AugmentConfig(MethodConfig):
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)

    copies: int = Field(1, ge=1, le=32, description="New examples made from each training example.")


class Augmenter(Method):
    """Subclasses implement `propose(texts, seed)`: for each text, its candidate copies (with a tag naming the
    operation that made each)."""

    order = DATA

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.report: dict[str, Any] = {}

    def propose(self, texts: list[str], seed: int) -> list[list[tuple[str, str]]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_examples(self, examples: Any, *, seed: int) -> Any:
        from transferkit.data.sources import Examples

        if examples.text_pairs is not None:
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> {self.name}: the training data has text pairs; augmenting pairs is not "
                               "supported (augment single texts, or drop the method)"])
        # the originals only: with several augmenters each copies the training split, not the others' copies
        n = int(examples.meta.get("originals", len(examples)))
        proposals = self.propose(list(examples.texts[:n]), seed)
        seen = set(examples.texts)
        texts, labels, origin = list(examples.texts), list(examples.labels), list(examples.origin)
        by_op: dict[str, int] = {}
        unchanged = 0
        for i, cands in enumerate(proposals):
            for k, (text, op) in enumerate(cands):
                text = text.strip()
                if not text or text in seen:
                    unchanged += 1
                    continue
                seen.add(text)
                texts.append(text)
                labels.append(examples.labels[i])
                origin.append(f"{examples.origin[i]} ({self.name} copy {k + 1}, {op})")
                by_op[op] = by_op.get(op, 0) + 1
        added = len(texts) - len(examples)
        self.report = {"original": n, "added": added, "by_operation": dict(sorted(by_op.items())),
                       "dropped_duplicates": unchanged}
        log.info("%s: %d training examples + %d augmented (%s)", self.name, n, added,
                 ", ".join(f"{k} {v}" for k, v in sorted(by_op.items())))
        return Examples(texts=texts, labels=labels, origin=origin, name=examples.name,
                        meta={**examples.meta, "originals": n}, stratify=examples.stratify)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.report}
