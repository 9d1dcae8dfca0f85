"""Back-translation (Sennrich et al. 2016; Xie et al. 2020): each training text translated to a pivot
language and back gives a paraphrase with the same label. The translation itself is a hook: a translator is
any function registered here under a name (`register_translator`), called on a batch of texts with a seed;
the generation tasks will register their models, and a user can register any model or service of their own."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

from pydantic import Field

from transferkit.methods.augment_common import AugmentConfig, Augmenter

#: name -> fn(texts, seed, copy) -> paraphrases (one per text)
TRANSLATORS: dict[str, Callable[[list[str], int, int], list[str]]] = {}


def register_translator(name: str) -> Callable[[Callable[[list[str], int, int], list[str]]], Any]:
    """Register a round-trip translator: `fn(texts, seed, copy)` returns one paraphrase per text."""
    def deco(fn: Callable[[list[str], int, int], list[str]]) -> Callable[[list[str], int, int], list[str]]:
        TRANSLATORS[name] = fn
        return fn

    return deco


class BackTranslationConfig(AugmentConfig):
    method: ClassVar[str] = "back_translation"
    summary: ClassVar[str] = "paraphrases by round-trip translation through a registered translator"

    translator: str = Field(..., description="Name of a translator registered with "
                            "transferkit.methods.back_translation.register_translator.")


class BackTranslation(Augmenter):
    Config = BackTranslationConfig

    def propose(self, texts: list[str], seed: int) -> list[list[tuple[str, str]]]:
        name = self.cfg.translator  # type: ignore[attr-defined]
        fn = TRANSLATORS.get(name)
        if fn is None:
            from transferkit.errors import ConfigError

            known = ", ".join(sorted(TRANSLATORS)) or "none is registered"
            raise ConfigError([f"methods -> back_translation -> translator: no translator named '{name}' ({known}). "
                               "transferkit ships no translation model yet; register one with "
                               "transferkit.methods.back_translation.register_translator"])
        out: list[list[tuple[str, str]]] = [[] for _ in texts]
        for k in range(self.cfg.copies):  # type: ignore[attr-defined]
            paraphrases = fn(list(texts), seed, k)
            if len(paraphrases) != len(texts):
                from transferkit.errors import TransferkitError

                raise TransferkitError(f"translator '{name}' returned {len(paraphrases)} texts for {len(texts)}")
            for i, p in enumerate(paraphrases):
                out[i].append((p, f"back_translation:{name}"))
        return out
