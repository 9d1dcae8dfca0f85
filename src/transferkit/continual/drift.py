"""Has the data moved away from what a run was trained on? `transferkit drift RUN --data NEW` compares new
texts with the training examples the run kept (replay.jsonl) and says whether an update is due.

Four checks, each with its own threshold (the defaults were set on Rotten Tomatoes: held-out reviews against
the kept training sample stay under every one, other kinds of text cross them; docs/continual.md):
- embedding shift: a logistic regression tries to tell the two samples apart from the run's own encoder
  (mean-pooled last hidden states); its cross-validated ROC AUC is ~0.5 when they are alike, 1.0 when they are
  separable (a "domain classifier", Rabanser et al. 2019);
- confidence shift: the run's mean top-class probability on each sample, and the two-sample KS test;
- label shift: total variation distance between the label distributions (the new data's own labels when it
  has them, and always the predicted ones);
- vocabulary: the share of the new texts' words never seen in the kept sample, against the same share for
  one half of the kept sample against the other (the rate at which new words appear anyway), and the share of
  tokens the tokenizer maps to its unknown token.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.continual.store import read_sample
from transferkit.errors import DataError

log = logging.getLogger(__name__)

#: defaults of the flags (each overridable on the command line)
AUC_MAX = 0.75
CONFIDENCE_DROP_MAX = 0.05
LABEL_TVD_MAX = 0.15
NEW_WORDS_EXCESS_MAX = 0.10
_WORD = re.compile(r"[\u3400-\u9fff]|\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens; each CJK character is a word (no segmenter needed for a rate)."""
    return _WORD.findall(text.lower())


def new_word_rate(texts: list[str], vocab: set[str]) -> float:
    toks = [w for t in texts for w in words(t)]
    return sum(w not in vocab for w in toks) / max(len(toks), 1)


def tvd(a: list[Any], b: list[Any]) -> float:
    """Total variation distance between the empirical distributions of two label lists."""
    ca, cb = Counter(a), Counter(b)
    keys = set(ca) | set(cb)
    return 0.5 * sum(abs(ca[k] / max(len(a), 1) - cb[k] / max(len(b), 1)) for k in keys)


def domain_auc(x_ref: np.ndarray, x_new: np.ndarray, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling the two samples apart (balanced sizes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.metrics import roc_auc_score

    x = np.vstack([x_ref, x_new])
    y = np.r_[np.zeros(len(x_ref)), np.ones(len(x_new))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    p = cross_val_predict(clf, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def embed(predictor: Any, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of the run's encoder."""
    import torch

    model = predictor.model
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    encoder = inner.base_model
    tok = predictor.tokenizer
    max_len = getattr(predictor.task, "max_length", 128)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok(texts[i:i + batch_size], truncation=True, max_length=max_len, padding=True,
                        return_tensors="pt").to(predictor.device)
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
    return np.vstack(out)


def check(run_dir: Path, texts: list[str], labels: list[Any] | None = None, *, max_examples: int = 1000,
          seed: int = 0, auc_max: float = AUC_MAX, confidence_drop_max: float = CONFIDENCE_DROP_MAX,
          label_tvd_max: float = LABEL_TVD_MAX, new_words_excess_max: float = NEW_WORDS_EXCESS_MAX) -> dict[str, Any]:
    """The drift report of `texts` (and their `labels`, when known) against the run's kept training sample."""
    from scipy.stats import ks_2samp

    from transferkit.deploy.predictor import Predictor

    run_dir = Path(run_dir)
    kept = read_sample(run_dir)
    if kept.inputs is not None:
        raise DataError(f"{run_dir}: drift checks compare plain texts, and this run's task keeps structured inputs "
                        "(tokens, spans, question + context); it works for text classification runs")
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]  # empty cells (None, NaN) skipped
    texts = [texts[i] for i in keep]
    labels = [labels[i] for i in keep] if labels is not None else None
    if len(texts) < 20:
        raise DataError(f"drift: {len(texts)} non-empty new text(s); give at least 20 for the checks to mean "
                        "anything (a few hundred is better)")
    rng = random.Random(seed)
    n = min(len(kept), len(texts), max_examples)
    ref_idx = sorted(rng.sample(range(len(kept)), n))
    new_idx = sorted(rng.sample(range(len(texts)), n))
    ref_texts = [kept.texts[i] for i in ref_idx]
    new_texts = [texts[i] for i in new_idx]
    pred = Predictor.load(run_dir)
    if pred.backend != "torch":
        raise DataError(f"{run_dir}: drift needs the run's torch model (it reads the encoder's hidden states)")
    report: dict[str, Any] = {"run": str(run_dir), "reference_examples": n, "new_examples": n}
    flags: list[str] = []

    # embedding shift
    auc = domain_auc(embed(pred, ref_texts), embed(pred, new_texts), seed=seed)
    report["embedding"] = {"domain_auc": auc, "max": auc_max}
    if auc > auc_max:
        flags.append(f"embedding: a classifier tells the new texts from the training sample with ROC AUC "
                     f"{auc:.3f} (> {auc_max}; 0.5 = indistinguishable)")

    # confidence and predicted-label shift (classification runs)
    kind = getattr(pred.task, "name", "")
    if kind == "text_classification" and not getattr(pred.task, "multilabel", False):
        p_ref = np.asarray(pred.predict_scores(ref_texts))
        p_new = np.asarray(pred.predict_scores(new_texts))
        c_ref, c_new = p_ref.max(1), p_new.max(1)
        ks = ks_2samp(c_ref, c_new)
        drop = float(c_ref.mean() - c_new.mean())
        report["confidence"] = {"reference_mean": float(c_ref.mean()), "new_mean": float(c_new.mean()),
                                "drop": drop, "ks_statistic": float(ks.statistic), "ks_pvalue": float(ks.pvalue),
                                "max_drop": confidence_drop_max}
        if drop > confidence_drop_max and ks.pvalue < 0.01:
            flags.append(f"confidence: the mean top-class probability fell from {c_ref.mean():.3f} to "
                         f"{c_new.mean():.3f} (KS p = {ks.pvalue:.2g})")
        names = list(pred.task.labels)
        pl_ref = [names[i] for i in p_ref.argmax(1)]
        pl_new = [names[i] for i in p_new.argmax(1)]
        report["predicted_labels"] = {"reference": dict(Counter(pl_ref)), "new": dict(Counter(pl_new)),
                                      "tvd": tvd(pl_ref, pl_new), "max": label_tvd_max}
        if report["predicted_labels"]["tvd"] > label_tvd_max:
            flags.append(f"predicted labels: their distribution moved by {report['predicted_labels']['tvd']:.3f} "
                         f"(total variation > {label_tvd_max})")
        if labels is not None:
            gold = [labels[i] for i in new_idx]
            ref_gold = [kept.labels[i] for i in ref_idx]
            unknown = sorted({str(y) for y in gold} - {str(y) for y in names})
            report["labels"] = {"reference": dict(Counter(map(str, ref_gold))), "new": dict(Counter(map(str, gold))),
                                "tvd": tvd(list(map(str, ref_gold)), list(map(str, gold))), "unknown": unknown,
                                "max": label_tvd_max}
            if unknown:
                flags.append(f"labels: the new data has labels the run does not know: {', '.join(unknown[:5])} "
                             "(an update grows the head)")
            elif report["labels"]["tvd"] > label_tvd_max:
                flags.append(f"labels: the label distribution moved by {report['labels']['tvd']:.3f} "
                             f"(total variation > {label_tvd_max})")

    # vocabulary
    half = n // 2
    vocab_a = {w for t in ref_texts[:half] for w in words(t)}
    vocab_all = {w for t in ref_texts for w in words(t)}
    baseline = new_word_rate(ref_texts[half:], vocab_a)
    # the new texts against as much reference as the baseline had (half), so the rates compare
    rate = new_word_rate(new_texts[:n - half], vocab_a)
    unk = pred.tokenizer.unk_token_id

    def unk_rate(ts: list[str]) -> float:
        ids = [i for t in ts for i in pred.tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]]
        return sum(i == unk for i in ids) / max(len(ids), 1)

    report["vocabulary"] = {"new_word_rate": rate, "baseline_new_word_rate": baseline, "excess": rate - baseline,
                            "unknown_token_rate": unk_rate(new_texts), "reference_unknown_token_rate":
                            unk_rate(ref_texts), "reference_words": len(vocab_all), "max_excess": new_words_excess_max}
    if rate - baseline > new_words_excess_max:
        flags.append(f"vocabulary: {rate:.1%} of the new words were never seen in the training sample, against "
                     f"{baseline:.1%} between two halves of it")
    report["flags"] = flags
    report["drift"] = bool(flags)
    report["verdict"] = ("drift: an update is due (`transferkit update RUN --data NEW`)" if flags else
                         "no drift: the new texts look like the training data")
    return report
