"""Metrics of generated text, by the maintained packages: ROUGE-1/2/L (rouge-score; on characters for
Chinese, whose words are not space-separated and which rouge-score's default tokenizer would drop), BLEU and
chrF (sacreBLEU; its `zh` tokenizer for Chinese), length statistics and distinct-n."""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs (extension A, unified, compatibility)
_WIDE = _HAN + "\u3000-\u303f\uff00-\uffef"  # ... and CJK / full-width punctuation
_CJK = re.compile(f"[{_HAN}]")
_SPACE_NEAR_CJK = re.compile(f"(?<=[{_WIDE}]) +| +(?=[{_WIDE}])")
_CHAR_TOKENS = re.compile(f"[{_HAN}]|[^{_HAN}\\W]+")  # one token per ideograph, runs of other word characters


def is_chinese(texts: list[str]) -> bool:
    """Most non-space characters of the texts are CJK ideographs."""
    chars = "".join("".join(t.split()) for t in texts[:2000])
    return bool(chars) and len(_CJK.findall(chars)) >= 0.5 * len(chars)


def join_cjk(text: str) -> str:
    """Remove the spaces a WordPiece tokenizer's decode puts between Chinese characters ('我 喜 欢' -> '我喜欢')."""
    return _SPACE_NEAR_CJK.sub("", text).strip()


class _CharTokenizer:
    """rouge-score tokenizer for Chinese: every ideograph a token, runs of other word characters one each."""

    def tokenize(self, text: str) -> list[str]:
        return _CHAR_TOKENS.findall(text.lower())


@functools.lru_cache(maxsize=2)
def _scorer(chinese: bool) -> Any:
    from absl import logging as absl_logging  # rouge-score logs "Using default tokenizer." at every scorer
    from rouge_score import rouge_scorer

    absl_logging.set_verbosity(absl_logging.WARNING)
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=not chinese,
                                    tokenizer=_CharTokenizer() if chinese else None)


def rouge(preds: list[str], refs: list[str], chinese: bool) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (0-1)."""
    scorer = _scorer(chinese)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(preds, refs):
        s = scorer.score(r, p)
        for k in sums:
            sums[k] += s[k].fmeasure
    n = max(len(preds), 1)
    return {k: v / n for k, v in sums.items()}


def bleu_chrf(preds: list[str], refs: list[str], chinese: bool) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100), sacreBLEU's defaults (its `zh` tokenizer for Chinese)."""
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(preds, [refs], tokenize="zh" if chinese else "13a")
    chrf = sacrebleu.corpus_chrf(preds, [refs])
    return {"bleu": float(bleu.score), "chrf": float(chrf.score)}


def tokens_of(text: str, chinese: bool) -> list[str]:
    return _CHAR_TOKENS.findall(text.lower()) if chinese else text.lower().split()


def distinct(preds: list[str], n: int, chinese: bool) -> float:
    """Distinct-n (Li et al. 2016): distinct n-grams over all n-grams of the outputs."""
    grams = [tuple(t[i:i + n]) for p in preds for t in [tokens_of(p, chinese)] for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def generation_metrics(preds: list[str], refs: list[str], chinese: bool | None = None) -> dict[str, Any]:
    """Everything a generation report shows, on one split."""
    if chinese is None:
        chinese = is_chinese(refs)
    out: dict[str, Any] = {**rouge(preds, refs, chinese), **bleu_chrf(preds, refs, chinese)}
    pl = np.array([len(tokens_of(p, chinese)) for p in preds], dtype=float)
    rl = np.array([len(tokens_of(r, chinese)) for r in refs], dtype=float)
    out.update({"distinct_1": distinct(preds, 1, chinese), "distinct_2": distinct(preds, 2, chinese),
                "length": {"unit": "characters" if chinese else "words",
                           "prediction_mean": float(pl.mean()) if len(pl) else 0.0,
                           "reference_mean": float(rl.mean()) if len(rl) else 0.0,
                           "empty_predictions": int((pl == 0).sum())}})
    return out
