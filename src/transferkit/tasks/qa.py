"""Extractive question answering (SQuAD v1.1 and v2.0).

- Question + context, the context cut into windows of model.max_length tokens overlapping by `doc_stride`;
  the offset mapping ties every context token back to its characters.
- Training: the answer's first and last tokens in each window that holds it; [CLS] (position 0) in windows
  that do not and for unanswerable questions.
- Decoding: over every window, every (start, end) pair of context tokens with end >= start and at most
  `max_answer_length` tokens, scored start logit + end logit (exact, not a top-k heuristic); the n-best
  answers are kept. SQuAD v2: "no answer" when the [CLS] score beats the best span by more than
  `null_threshold`.
- Metrics: exact match and F1 with the official SQuAD normalisation (lower case, no punctuation, no
  articles, single spaces), the maximum over the gold answers; for v2 also HasAns / NoAns. Chinese and
  Japanese characters count as one token each in F1 (as CMRC scores them).
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.sources import Examples, check_utf8, iter_jsonl
from transferkit.errors import ConfigError, DataError
from transferkit.tasks.base import Encoded, pad_inputs

_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff])")


# ---------------------------------------------------------------- official SQuAD metric


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the SQuAD evaluation script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return _CJK.sub(r" \1 ", normalize_answer(s)).split() if s else []


def exact(gold: str, pred: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    g, p = _tokens(gold), _tokens(pred)
    if not g or not p:
        return float(g == p)  # both empty (no answer): 1; one empty: 0
    common = collections.Counter(g) & collections.Counter(p)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(golds: list[list[str]], preds: list[str]) -> dict[str, Any]:
    """EM and F1 (fractions), max over each question's gold answers; an empty gold list means
    unanswerable (only the empty prediction is right). HasAns/NoAns breakdowns when both kinds exist."""
    em = [max(exact(g, p) for g in (gs or [""])) for gs, p in zip(golds, preds)]
    f = [max(f1(g, p) for g in (gs or [""])) for gs, p in zip(golds, preds)]
    out: dict[str, Any] = {"exact_match": float(np.mean(em)) if em else 0.0, "f1": float(np.mean(f)) if f else 0.0,
                           "total": len(preds)}
    has = [i for i, gs in enumerate(golds) if gs]
    no = [i for i, gs in enumerate(golds) if not gs]
    if has and no:
        out.update(HasAns_exact=float(np.mean([em[i] for i in has])), HasAns_f1=float(np.mean([f[i] for i in has])),
                   HasAns_total=len(has), NoAns_exact=float(np.mean([em[i] for i in no])),
                   NoAns_f1=float(np.mean([f[i] for i in no])), NoAns_total=len(no))
    return out


# ---------------------------------------------------------------- data


def _answers(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, dict):  # Hugging Face layout: {text: [...], answer_start: [...]}
        texts, starts = raw.get("text", []), raw.get("answer_start", [])
        if len(texts) != len(starts):
            raise DataError(f"{where}: answers has {len(texts)} texts but {len(starts)} answer_start values.")
        return [{"text": str(t), "answer_start": int(s)} for t, s in zip(texts, starts)]
    if isinstance(raw, list):
        out = []
        for a in raw:
            if not isinstance(a, dict) or "text" not in a or "answer_start" not in a:
                raise DataError(f"{where}: an answer is {{text, answer_start}}, got {a!r}.")
            out.append({"text": str(a["text"]), "answer_start": int(a["answer_start"])})
        return out
    raise DataError(f"{where}: answers must be a list of {{text, answer_start}} or {{text: [...], answer_start: [...]}}.")


def checked_answers(context: str, answers: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Each answer's text must be at its answer_start in the context; an offset that is off by a few
    characters (a common export bug) is moved to the nearest occurrence, an answer not in the context is an error."""
    out = []
    for a in answers:
        text, s = a["text"], a["answer_start"]
        if not text.strip():
            raise DataError(f"{where}: an answer text is empty (unanswerable questions have no answers).")
        if context[s:s + len(text)] != text:
            hits = [m.start() for m in re.finditer(re.escape(text), context)]
            if not hits:
                raise DataError(f"{where}: the answer {text!r} is not in the context.")
            s = min(hits, key=lambda h: abs(h - s))
        out.append({"text": text, "answer_start": s})
    return out


@dataclass
class QuestionAnsweringTask:
    max_length: int = 384
    doc_stride: int = 128
    max_answer_length: int = 30
    n_best: int = 20
    null_threshold: float = 0.0
    version_2: bool | None = None
    pad_token_id: int = 0
    name: str = "question_answering"
    primary_metric: str = "f1"
    token_level: bool = True
    baselines: tuple[str, ...] = ()  # majority and linear probe need one label per example
    labels = ()  # no label set: answers are spans

    @classmethod
    def from_config(cls, cfg) -> QuestionAnsweringTask:
        q = cfg.task.qa
        stride = cfg.model.max_length // 4 if q.doc_stride is None else q.doc_stride
        if stride >= cfg.model.max_length // 2:
            raise ConfigError([f"task -> qa -> doc_stride: {stride} must be less than half of model.max_length "
                               f"({cfg.model.max_length}); e.g. max_length 384 with doc_stride 128"])
        return cls(max_length=cfg.model.max_length, doc_stride=stride, max_answer_length=q.max_answer_length,
                   n_best=q.n_best, null_threshold=q.null_threshold, version_2=q.version_2)

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> QuestionAnsweringTask:
        return cls(max_length=d["max_length"], doc_stride=d["doc_stride"], max_answer_length=d["max_answer_length"],
                   n_best=d["n_best"], null_threshold=d["null_threshold"], version_2=d["version_2"],
                   pad_token_id=d.get("pad_token_id", 0))

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "max_length": self.max_length, "doc_stride": self.doc_stride,
                "max_answer_length": self.max_answer_length, "n_best": self.n_best,
                "null_threshold": self.null_threshold, "version_2": bool(self.version_2),
                "pad_token_id": self.pad_token_id}

    # ------------------------------------------------------------------ reading

    def _examples(self, recs: list[dict[str, Any]], name: str) -> Examples:
        return Examples(texts=[r["question"] for r in recs], text_pairs=[r["context"] for r in recs],
                        labels=[r["answers"] for r in recs], origin=[r["origin"] for r in recs], name=name,
                        inputs=[{"id": r["id"], "question": r["question"], "context": r["context"]} for r in recs],
                        stratify=False)

    def _rec(self, qid: Any, question: Any, context: Any, answers: Any, where: str) -> dict[str, Any]:
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: the question is empty.")
        if not isinstance(context, str) or not context.strip():
            raise DataError(f"{where}: the context is empty.")
        return {"id": str(qid) if qid is not None else where, "question": question, "context": context,
                "answers": checked_answers(context, _answers(answers, where), where), "origin": where}

    def read(self, ref: str, data_cfg: Any) -> dict[str, Examples]:
        """SQuAD JSON ({data: [{paragraphs: [{context, qas}]}]}), JSONL (id, question, context, answers),
        the built-in bbc_qa, or (online) a hub dataset with those columns."""
        if ref == "bbc_qa":
            from transferkit.data.annotated import records

            return {"train": self._examples([self._rec(r["id"], r["question"], para, r["answers"], w)
                                             for w, r, para in records("bbc_qa")], "train")}
        p = Path(ref)
        if p.is_file():
            check_utf8(p)
            if p.suffix.lower() == ".jsonl":
                return {"train": self._examples(self._read_jsonl(p), "train")}
            if p.suffix.lower() == ".json":
                return {"train": self._examples(self._read_squad(p), "train")}
            raise DataError(f"{p}: QA data is SQuAD .json or .jsonl, not '{p.suffix}'.")
        if "/" in ref and not p.exists():
            from transferkit.data.sources import read_source

            out = {}
            for split, ds in read_source(ref).items():
                out[split] = self._examples([self._rec(r.get("id"), r["question"], r["context"], r.get("answers"),
                                                       f"{ref}[{split}] row {i + 1}") for i, r in enumerate(ds)], split)
            return out
        raise DataError(f"QA data '{ref}' is neither the built-in 'bbc_qa', a SQuAD .json / .jsonl file, nor a hub "
                        f"name (working directory: {Path.cwd()}).")

    def _read_jsonl(self, p: Path) -> list[dict[str, Any]]:
        recs = [self._rec(o.get("id"), o.get("question"), o.get("context"), o.get("answers"), where)
                for where, o in iter_jsonl(p)]
        if not recs:
            raise DataError(f"{p}: no questions found.")
        return recs

    def _read_squad(self, p: Path) -> list[dict[str, Any]]:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON (line {e.lineno}: {e.msg}).") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise DataError(f"{p}: a SQuAD file is {{\"data\": [{{\"paragraphs\": [...]}}]}}.")
        recs = []
        for a, article in enumerate(doc["data"]):
            for k, para in enumerate(article.get("paragraphs", [])):
                for qa in para.get("qas", []):
                    where = f"{p} data[{a}].paragraphs[{k}] question {qa.get('id', '?')}"
                    answers = [] if qa.get("is_impossible") else qa.get("answers")
                    recs.append(self._rec(qa.get("id"), qa.get("question"), para.get("context"), answers, where))
        if not recs:
            raise DataError(f"{p}: no questions found.")
        return recs

    def fit_labels(self, train: Examples) -> None:
        if self.version_2 is None:
            self.version_2 = any(not a for a in train.labels)

    def check(self, split: Examples) -> None:
        if not self.version_2:
            bad = [split.origin[i] for i, a in enumerate(split.labels) if not a]
            if bad:
                raise DataError(f"{len(bad)} unanswerable question(s) in the {split.name} split, but the training "
                                f"data has none (SQuAD v1): {'; '.join(bad[:5])}. Set task.qa.version_2: true.")

    def examples_for_prediction(self, items: list[Any], pairs: list[str] | None = None) -> Examples:
        """{question, context} records, or questions with `pairs` as their contexts."""
        recs = []
        for n, it in enumerate(items):
            if isinstance(it, dict):
                q, c = it.get("question"), it.get("context")
            else:
                q, c = it, (pairs[n] if pairs is not None else None)
            recs.append({**self._rec(it.get("id") if isinstance(it, dict) else None, q, c, None, f"input {n + 1}"),
                         "answers": None})  # no gold: no training targets, no loss
        return self._examples(recs, "input")

    # ------------------------------------------------------------------ encoding

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(["question answering needs a fast tokenizer (offset mapping)"])
        self.pad_token_id = tokenizer.pad_token_id or 0
        questions = [q.lstrip() for q in split.texts]
        try:
            enc = tokenizer(questions, split.text_pairs, truncation="only_second", max_length=self.max_length,
                            stride=self.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                            return_attention_mask=False)
        except Exception as e:  # the tokenizer refuses a stride too large for a long question
            raise ConfigError([f"task -> qa: the tokenizer could not cut windows ({e}); lower doc_stride or raise "
                               f"model.max_length"]) from None
        feats: list[dict[str, Any]] = []
        for k, ids in enumerate(enc["input_ids"]):
            i = enc["overflow_to_sample_mapping"][k]
            seq = enc.sequence_ids(k)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][k], seq)]
            f: dict[str, Any] = {"input_ids": ids, "offsets": offsets, "example": i}
            if "token_type_ids" in enc:
                f["token_type_ids"] = enc["token_type_ids"][k]
            answers = split.labels[i]
            if answers is not None:
                f["start_positions"], f["end_positions"] = self._positions(answers, offsets)
            feats.append(f)
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats],
                       meta={"inputs": split.inputs, "answers": split.labels})

    @staticmethod
    def _positions(answers: list[dict[str, Any]], offsets: list[tuple[int, int] | None]) -> tuple[int, int]:
        """Token positions of the first answer in this window, or (0, 0) ([CLS]) when it is not inside."""
        if not answers:
            return 0, 0
        s = answers[0]["answer_start"]
        e = s + len(answers[0]["text"])
        spans = {j: o for j, o in enumerate(offsets) if o is not None}
        ctx = list(spans)
        if not ctx or spans[ctx[0]][0] > s or spans[ctx[-1]][1] < e:
            return 0, 0
        start = next(j for j in ctx if spans[j][1] > s)
        end = next(j for j in reversed(ctx) if spans[j][0] < e)
        return start, end

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.pad_token_id)
        if "start_positions" in features[0]:
            batch["start_positions"] = torch.tensor([f["start_positions"] for f in features])
            batch["end_positions"] = torch.tensor([f["end_positions"] for f in features])
        return batch

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transferkit.modeling.load import instantiate, model_config

        return instantiate(self.model_class(), ref, init, model_config(ref, init, size, tokenizer, dropout))

    @staticmethod
    def model_class(config: Any = None) -> Any:
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        out = model(**inputs)
        return torch.stack([out.start_logits, out.end_logits], dim=-1)

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs.float().masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, -1e4)
        return (nn.functional.cross_entropy(logits[..., 0], batch["start_positions"])
                + nn.functional.cross_entropy(logits[..., 1], batch["end_positions"])) / 2

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()  # start and end logits per token

    # ------------------------------------------------------------------ decoding

    def _window_spans(self, logits: np.ndarray, offsets: list) -> tuple[list[tuple[float, int, int]], float]:
        """The n best (score, char start, char end) spans of one window, and its null ([CLS]) score."""
        s, e = logits[:, 0], logits[:, 1]
        ctx = np.array([o is not None for o in offsets])
        n = len(offsets)
        pair = s[:, None] + e[None, :]
        i, j = np.indices((n, n))
        valid = (j >= i) & (j - i < self.max_answer_length) & ctx[:, None] & ctx[None, :]
        pair = np.where(valid, pair, -np.inf)
        flat = pair.ravel()
        k = min(self.n_best, int(valid.sum()))
        best: Any = np.argpartition(-flat, k - 1)[:k] if k else []
        spans = [(float(flat[b]), offsets[b // n][0], offsets[b % n][1]) for b in best]
        return sorted(spans, reverse=True), float(s[0] + e[0])

    def postprocess(self, scores: list[np.ndarray], encoded: Encoded) -> list[dict[str, Any]]:
        per_example: dict[int, list[int]] = collections.defaultdict(list)
        for k, f in enumerate(encoded.features):
            per_example[f["example"]].append(k)
        out = []
        for i, inp in enumerate(encoded.meta["inputs"]):
            cands: list[tuple[float, int, int]] = []
            null = np.inf
            for k in per_example[i]:
                spans, null_k = self._window_spans(scores[k], encoded.features[k]["offsets"])
                cands += spans
                null = min(null, null_k)
            seen, nbest = set(), []
            for sc, a, b in sorted(cands, reverse=True):
                if (a, b) not in seen:
                    seen.add((a, b))
                    nbest.append({"answer": inp["context"][a:b], "start": a, "end": b, "score": sc})
                if len(nbest) == self.n_best:
                    break
            best = nbest[0] if nbest else {"answer": "", "start": None, "end": None, "score": -np.inf}
            no_answer = self.version_2 and (not nbest or null - best["score"] > self.null_threshold)
            out.append({"answer": "" if no_answer else best["answer"], "start": None if no_answer else best["start"],
                        "end": None if no_answer else best["end"], "score": best["score"], "null_score": null,
                        "n_best": nbest})
        return out

    def gold(self, encoded: Encoded) -> list[list[str]]:
        return [[a["text"] for a in ans] if ans is not None else [] for ans in encoded.meta["answers"]]

    def metrics(self, scores: list[dict[str, Any]], labels: list[list[str]]) -> dict[str, Any]:
        return squad_scores(labels, [p["answer"] for p in scores])

    def decode(self, scores: list[dict[str, Any]], encoded: Encoded | None = None) -> list[dict[str, Any]]:
        return [{"answer": p["answer"], "start": p["start"], "end": p["end"], "score": round(p["score"], 4),
                 "no_answer": p["answer"] == "" and bool(self.version_2),
                 "n_best": [{**c, "score": round(c["score"], 4)} for c in p["n_best"][:5]]} for p in scores]
