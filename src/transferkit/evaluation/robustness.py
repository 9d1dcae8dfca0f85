"""Robustness of a text classifier, CheckList-style (Ribeiro et al. 2020), and a greedy word-substitution attack.

Invariance tests (INV): a perturbation that should not change the label (typos, casing, punctuation,
contractions, person names, numbers, synonyms) is applied to test texts; reported per perturbation: how many
texts it applied to, the accuracy before and after, and the flip rate (the predicted label changed).

Directional tests (DIR, sentiment labels only): a clearly negative or positive sentence appended, or an
intensifier added; the probability of the label they point away from must not rise (negative phrase: P(positive)
must not go up by more than `tolerance`; positive phrase: P(negative) likewise; intensifier: the predicted
label's probability must not fall by more than `tolerance`). Reported: the violation rate.

Every perturbation is a pure function of (text, seed, index): the same seed gives the same perturbed texts.

The attack (greedy, TextFooler-like without its sentence encoder): words ranked by how much deleting each one
lowers the gold label's probability, then, most important first, each replaced by the candidate (WordNet
synonyms for English, the shipped synonym table for Chinese, or the model's own nearest input embeddings) that
lowers it most, until the prediction flips or `max_fraction` of the words has changed. Reported: the attack
success rate on correctly classified texts, the queries per text and the share of words changed.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from transferkit.methods.augment_common import is_chinese, words_of

log = logging.getLogger(__name__)

FIRST_NAMES = {
    "en": ["John", "Mary", "James", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Susan",
           "Maria", "Ahmed", "Wei", "Priya", "Carlos", "Fatima", "Hiroshi", "Olga", "Kwame", "Sofia"],
    "zh": ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴霞"],
}
CONTRACTIONS = {"is not": "isn't", "are not": "aren't", "was not": "wasn't", "were not": "weren't",
                "do not": "don't", "does not": "doesn't", "did not": "didn't", "can not": "can't",
                "cannot": "can't", "will not": "won't", "would not": "wouldn't", "it is": "it's",
                "that is": "that's", "i am": "i'm", "you are": "you're", "they are": "they're", "has not": "hasn't",
                "have not": "haven't", "should not": "shouldn't", "could not": "couldn't"}
PHRASES = {"en": {"negative": ["Overall, it was terrible.", "I hated it.", "What a waste of time."],
                  "positive": ["Overall, it was wonderful.", "I loved it.", "Truly a great experience."]},
           "zh": {"negative": ["总之很差。", "太失望了。", "完全是浪费时间。"],
                  "positive": ["总之很好。", "非常满意。", "真的很棒。"]}}
INTENSIFY = {"en": (re.compile(r"\b(good|great|bad|funny|boring|dull|fine|nice|awful|beautiful|clever|smart|"
                               r"stupid|interesting|entertaining|enjoyable|moving|weak|strong|poor)\b", re.I), "very "),
             "zh": (re.compile(r"(很|挺|比较)"), "非常")}
_STOP = {"the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "is", "it", "its", "this", "that",
         "with", "for", "as", "by", "be", "are", "was", "were", "from", "has", "have", "had", "not", "no"}


def _lang(text: str) -> str:
    return "zh" if is_chinese(text) else "en"


def typo(text: str, rng: random.Random) -> str | None:
    """Two adjacent letters swapped inside one word of 4+ letters (Chinese: two adjacent characters)."""
    if _lang(text) == "zh":
        spots = [i for i in range(len(text) - 1) if text[i].strip() and text[i + 1].strip() and text[i] != text[i + 1]]
        if not spots:
            return None
        i = rng.choice(spots)
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not spots:
        return None
    i = rng.choice(spots)
    w = words[i]
    j = rng.randrange(1, len(w) - 2) if len(w) > 3 else 0
    if w[j] == w[j + 1]:
        return None
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def lowercase(text: str, rng: random.Random) -> str | None:
    out = text.lower()
    return out if out != text else None


def uppercase(text: str, rng: random.Random) -> str | None:
    out = text.upper()
    return out if out != text else None


def punctuation(text: str, rng: random.Random) -> str | None:
    """Trailing punctuation removed if there is some, else a period (Chinese: 。) added."""
    stripped = text.rstrip(" .!?。！？…")
    if stripped != text.rstrip():
        return stripped
    return text.rstrip() + ("。" if _lang(text) == "zh" else ".")


def contraction(text: str, rng: random.Random) -> str | None:
    """'is not' <-> "isn't" and the like (the first that applies, both directions)."""
    low = text.lower()
    for long, short in CONTRACTIONS.items():
        for a, b in ((long, short), (short, long)):
            m = re.search(rf"(?<![\w']){re.escape(a)}(?![\w'])", low)
            if m:
                return text[:m.start()] + b + text[m.end():]
    return None


def name(text: str, rng: random.Random) -> str | None:
    """A first name of the list replaced by another one of the list."""
    names = FIRST_NAMES[_lang(text)]
    found = [n for n in names if re.search(rf"\b{re.escape(n)}\b" if _lang(text) == "en" else re.escape(n), text)]
    if not found:
        return None
    old = rng.choice(found)
    new = rng.choice([n for n in names if n != old])
    return re.sub(rf"\b{re.escape(old)}\b" if _lang(text) == "en" else re.escape(old), new, text)


def number(text: str, rng: random.Random) -> str | None:
    """Each number changed to another of the same number of digits."""
    if not re.search(r"\d", text):
        return None

    def swap(m: re.Match[str]) -> str:
        s = m.group(0)
        lo = 10 ** (len(s) - 1) if len(s) > 1 else 0
        new = str(rng.randrange(lo, 10 ** len(s)))
        return new if new != s else str((int(s) + 1) % 10 ** len(s)).zfill(len(s))

    return re.sub(r"\d+", swap, text)


_LATIN = re.compile(r"[A-Za-z_0-9]")


_ZH_STOP = set("不没无非别未很太最更也都就还又的地得了着过是在有和与或但")


def same_script(word: str, candidates: list[str]) -> list[str]:
    """Candidates written like the word: for a Chinese word, no Latin letters, digits or underscores and at
    most one character longer or shorter (the synonym table holds junk such as 'CAPO_maging_值得' and
    abbreviation collisions such as 不 -> 世界自然基金会); Chinese negations and function words get none."""
    if _LATIN.search(word):
        return candidates
    if word in _ZH_STOP:
        return []
    return [c for c in candidates if not _LATIN.search(c) and abs(len(c) - len(word)) <= 1]


def _synonyms_for(text: str) -> Callable[[str], list[str]] | None:
    from transferkit.methods import synonyms as syn

    if _lang(text) == "zh":
        table = syn.chinese()
        return lambda w: same_script(w, table(w))
    return None if syn.missing_wordnet() else syn.wordnet()


def synonym(text: str, rng: random.Random) -> str | None:
    """One content word replaced by a single-word synonym (WordNet for English, the synonym table for Chinese)."""
    lookup = _synonyms_for(text)
    if lookup is None:
        return None
    words, joiner = words_of(text)
    spots = [i for i, w in enumerate(words) if w.lower() not in _STOP and (len(w) > 3 or _lang(text) == "zh")
             and any(c.isalpha() for c in w)]
    rng.shuffle(spots)
    for i in spots:
        options = [s for s in lookup(words[i].lower()) if " " not in s and s.lower() != words[i].lower()]
        if options:
            new = rng.choice(sorted(options))
            words[i] = new.capitalize() if words[i][:1].isupper() else new
            return joiner.join(words)
    return None


INVARIANCE: dict[str, Callable[[str, random.Random], str | None]] = {
    "typo": typo, "lowercase": lowercase, "uppercase": uppercase, "punctuation": punctuation,
    "contraction": contraction, "name": name, "number": number, "synonym": synonym}


def add_phrase(kind: str) -> Callable[[str, random.Random], str | None]:
    def apply(text: str, rng: random.Random) -> str | None:
        sep = "" if _lang(text) == "zh" else " "
        return text.rstrip() + sep + rng.choice(PHRASES[_lang(text)][kind])
    return apply


def intensifier(text: str, rng: random.Random) -> str | None:
    pattern, word = INTENSIFY[_lang(text)]
    m = pattern.search(text)
    if not m:
        return None
    if _lang(text) == "zh":
        return text[:m.start()] + word + text[m.end():]
    return text[:m.start()] + word + text[m.start():]


DIRECTIONAL: dict[str, Callable[[str, random.Random], str | None]] = {
    "negative_phrase": add_phrase("negative"), "positive_phrase": add_phrase("positive"), "intensifier": intensifier}


def sentiment_labels(labels: list[str]) -> tuple[int, int] | None:
    """(positive index, negative index) when the label names say which is which, else None."""
    pos = {"positive", "pos", "fresh", "good", "正面", "好评"}
    neg = {"negative", "neg", "rotten", "bad", "负面", "差评"}
    p = [i for i, y in enumerate(labels) if str(y).lower() in pos]
    n = [i for i, y in enumerate(labels) if str(y).lower() in neg]
    return (p[0], n[0]) if len(p) == 1 and len(n) == 1 else None


def perturb(texts: list[str], fn: Callable[[str, random.Random], str | None], seed: int, salt: str
            ) -> list[tuple[int, str]]:
    """(index, perturbed text) for every text the perturbation applies to; seeded per (seed, salt, index)."""
    out = []
    for i, t in enumerate(texts):
        p = fn(t, random.Random(f"{salt}:{seed}:{i}"))
        if p is not None and p != t:
            out.append((i, p))
    return out


def _argmax(p: np.ndarray) -> np.ndarray:
    return np.asarray(p).argmax(1)


def _perturbed_scores(texts: list[str], fn: Callable[[str, random.Random], str | None], seed: int, key: str,
                      score: Callable[[list[str]], np.ndarray]) -> tuple[list[tuple[int, str]], np.ndarray, np.ndarray]:
    """The (index, perturbed text) pairs of one perturbation, their indices and their scores."""
    pairs = perturb(texts, fn, seed, key)
    idx = np.array([i for i, _ in pairs], dtype=int)
    return pairs, idx, (score([p for _, p in pairs]) if pairs else np.zeros((0, 0)))


def checklist(score: Callable[[list[str]], np.ndarray], texts: list[str], gold: np.ndarray, labels: list[str], *,
              seed: int = 0, tolerance: float = 0.1, examples: int = 3,
              decide: Callable[[np.ndarray], np.ndarray] = _argmax) -> dict[str, Any]:
    """The INV and DIR tables on `texts` with gold label indices `gold`; `score` maps texts to probabilities,
    `decide` probabilities to label indices (the task's rule: argmax, or a tuned threshold)."""
    base = score(texts)
    pred = decide(base)
    inv: dict[str, Any] = {}
    for key, fn in INVARIANCE.items():
        pairs, idx, after = _perturbed_scores(texts, fn, seed, key, score)
        if not pairs:
            inv[key] = {"n": 0}
            continue
        new = decide(after)
        flips = new != pred[idx]
        inv[key] = {"n": len(pairs), "accuracy_before": float((pred[idx] == gold[idx]).mean()),
                    "accuracy_after": float((new == gold[idx]).mean()), "flip_rate": float(flips.mean()),
                    "examples": [{"before": texts[i], "after": p, "label_before": labels[int(pred[i])],
                                  "label_after": labels[int(n)]}
                                 for (i, p), n, f in zip(pairs, new, flips) if f][:examples]}
    out: dict[str, Any] = {"n": len(texts), "accuracy": float((pred == gold).mean()), "invariance": inv}
    sl = sentiment_labels(labels)
    if sl is None:
        out["directional"] = None
        out["directional_note"] = (f"directional tests need sentiment labels (one positive, one negative); the labels "
                                   f"are {labels}")
        return out
    p_i, n_i = sl
    dirs: dict[str, Any] = {}
    for key, fn in DIRECTIONAL.items():
        pairs, idx, after = _perturbed_scores(texts, fn, seed, key, score)
        if not pairs:
            dirs[key] = {"n": 0}
            continue
        if key == "negative_phrase":
            change = after[:, p_i] - base[idx, p_i]
            bad, expect = change > tolerance, f"P({labels[p_i]}) does not rise"
        elif key == "positive_phrase":
            change = after[:, n_i] - base[idx, n_i]
            bad, expect = change > tolerance, f"P({labels[n_i]}) does not rise"
        else:
            change = after[np.arange(len(idx)), pred[idx]] - base[idx, pred[idx]]
            bad, expect = change < -tolerance, "the predicted label's probability does not fall"
        dirs[key] = {"n": len(pairs), "expectation": expect, "violation_rate": float(bad.mean()),
                     "mean_change": float(change.mean()),
                     "examples": [{"before": texts[int(i)], "after": p, "change": float(c)}
                                  for (i, p), c, b in zip(pairs, change, bad) if b][:examples]}
    out["directional"] = dirs
    out["tolerance"] = tolerance
    return out


# ---------------------------------------------------------------------------------------------------- attack


def embedding_neighbours(predictor: Any, k: int = 8) -> Callable[[str], list[str]]:
    """Candidate substitutes for a word: the whole-word vocabulary tokens nearest to it in the model's own
    input embeddings (cosine). Words that are not one token have none."""
    import torch

    tok = predictor.tokenizer
    emb = predictor.model.get_input_embeddings().weight.detach().float()
    vocab = tok.get_vocab()
    words = [w for w in vocab if w.isalpha() and len(w) > 1 and not w.startswith("##")]
    ids = torch.tensor([vocab[w] for w in words])
    mat = torch.nn.functional.normalize(emb[ids], dim=-1)
    row = {w: i for i, w in enumerate(words)}

    def near(word: str) -> list[str]:
        i = row.get(word.lower())
        if i is None:
            return []
        sims = mat @ mat[i]
        sims[i] = -2.0
        return [words[j] for j in sims.topk(k).indices.tolist()]

    return near


def attack(score: Callable[[list[str]], np.ndarray], texts: list[str], gold: np.ndarray, *,
           candidates: Callable[[str], list[str]], max_fraction: float = 0.2, max_candidates: int = 8,
           decide: Callable[[np.ndarray], np.ndarray] = _argmax) -> dict[str, Any]:
    """Greedy word substitution against `score` on the texts it classifies correctly (`decide`: as checklist)."""
    base = score(texts)
    base_pred = decide(base)
    rows: list[dict[str, Any]] = []
    for i, text in enumerate(texts):
        y = int(gold[i])
        if int(base_pred[i]) != y:
            continue
        words, joiner = words_of(text)
        if not words:
            continue
        queries = 0
        # importance: the gold probability lost when the word is deleted
        dropped = [joiner.join(words[:j] + words[j + 1:]) for j in range(len(words))]
        p_drop = score(dropped)[:, y]
        queries += len(dropped)
        order = np.argsort(p_drop)  # lowest remaining probability first
        budget = max(1, int(max_fraction * len(words)))
        current, p_cur, changed, flipped = list(words), float(base[i, y]), 0, False
        for j in order:
            if changed >= budget:
                break
            w = current[j]
            if w.lower() in _STOP or not any(c.isalpha() for c in w):
                continue
            subs = same_script(w, [s for s in candidates(w) if " " not in s and s.lower() != w.lower()])[:max_candidates]
            if not subs:
                continue
            trials = [joiner.join(current[:j] + [s] + current[j + 1:]) for s in subs]
            probs = score(trials)
            queries += len(trials)
            best = int(probs[:, y].argmin())
            if probs[best, y] < p_cur:
                current[j] = subs[best]
                p_cur = float(probs[best, y])
                changed += 1
                if int(decide(probs[best:best + 1])[0]) != y:
                    flipped = True
                    break
        rows.append({"index": i, "success": flipped, "queries": queries, "changed": changed, "words": len(words),
                     **({"before": text, "after": joiner.join(current)} if flipped else {})})
    n = len(rows)
    ok = [r for r in rows if r["success"]]
    return {"attacked": n, "skipped_misclassified": int(len(texts) - n), "success_rate": len(ok) / n if n else 0.0,
            "queries_mean": float(np.mean([r["queries"] for r in rows])) if rows else 0.0,
            "words_changed_mean": float(np.mean([r["changed"] / r["words"] for r in ok])) if ok else 0.0,
            "accuracy_under_attack": (n - len(ok)) / len(texts) if texts else 0.0,
            "examples": [{"before": r["before"], "after": r["after"]} for r in ok[:5]]}
