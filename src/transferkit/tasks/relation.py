"""Relation extraction: a text, a head and a tail entity span (with optional types) -> a relation label.

Entity markers are inserted around the two spans (`<e1:PER> Angela Merkel </e1:PER> ... <e2:ORG> ...`;
plain `<e1>`/`<e2>` without types) and added to the tokenizer as special tokens. The head reads the encoder
states at the two start markers (pooling: markers) or [CLS] (pooling: cls). A text too long for the
window is cut around the two entities. Micro-F1 excludes the no-relation class, as TACRED scores it.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from transferkit.data.sources import Examples, iter_jsonl
from transferkit.errors import ConfigError, DataError
from transferkit.tasks.base import Encoded
from transferkit.tasks.classification import ClassificationTask

INLINE = re.compile(r"<(e[12])>(.*?)</\1>", re.S)
REL_HEAD = "BertForRelationClassification"


def _span(obj: Any, text: str, where: str, role: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or "start" not in obj or "end" not in obj:
        raise DataError(f"{where}: '{role}' must be {{start, end[, type]}} (character offsets), got {obj!r}.")
    try:
        s, e = int(obj["start"]), int(obj["end"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: '{role}' offsets must be integers, got {obj!r}.") from None
    if not (0 <= s < e <= len(text)):
        raise DataError(f"{where}: {role} span {s}-{e} lies outside the text (length {len(text)}).")
    t = obj.get("type")
    return {"start": s, "end": e, "type": None if t in (None, "") else str(t)}


def parse_inline(text: str, where: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """SemEval-style '<e1>...</e1> ... <e2>...</e2>' -> plain text and the two spans."""
    out, spans, pos = [], {}, 0
    for m in INLINE.finditer(text):
        out.append(text[pos:m.start()])
        start = sum(len(p) for p in out)
        out.append(m.group(2))
        spans[m.group(1)] = {"start": start, "end": start + len(m.group(2)), "type": None}
        pos = m.end()
    out.append(text[pos:])
    if set(spans) != {"e1", "e2"}:
        raise DataError(f"{where}: expected head/tail fields or inline markers <e1>...</e1> and <e2>...</e2>.")
    return "".join(out), spans["e1"], spans["e2"]


@dataclass
class RelationExtractionTask(ClassificationTask):
    name: str = "relation_extraction"
    markers: str = "typed"
    pooling: str = "markers"
    no_relation: str = "no_relation"
    entity_types: list[str] = field(default_factory=list)
    head_column: str = "head"
    tail_column: str = "tail"
    text_column: str = "text"
    label_column: str = "label"
    token_level = False

    @classmethod
    def from_config(cls, cfg) -> RelationExtractionTask:
        r = cfg.task.relation
        return cls(labels=list(cfg.task.labels or []), markers=r.markers, pooling=r.pooling,
                   no_relation=r.no_relation, max_length=cfg.model.max_length, head_column=r.head_column,
                   tail_column=r.tail_column, text_column=cfg.data.text_column, label_column=cfg.data.label_column)

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> RelationExtractionTask:
        return cls(labels=d["labels"], markers=d["markers"], pooling=d["pooling"], no_relation=d["no_relation"],
                   entity_types=d["entity_types"], max_length=d["max_length"], pad_token_id=d.get("pad_token_id", 0),
                   temperature=d.get("temperature", 1.0))

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "labels": self.labels, "markers": self.markers, "pooling": self.pooling,
                "no_relation": self.no_relation, "entity_types": self.entity_types, "max_length": self.max_length,
                "pad_token_id": self.pad_token_id, **({"temperature": self.temperature} if self.temperature != 1.0 else {})}

    @property
    def primary_metric(self) -> str:
        return "f1"

    # ------------------------------------------------------------------ data

    def _examples(self, recs: list[tuple[str, str, dict, dict, Any]], name: str) -> Examples:
        """(origin, text, head, tail, label) -> Examples; texts are the marked texts (unique per pair)."""
        for where, text, h, t, _ in recs:
            if h["start"] < t["end"] and t["start"] < h["end"]:
                raise DataError(f"{where}: the head ({h['start']}-{h['end']}) and tail ({t['start']}-{t['end']}) "
                                "spans overlap.")
        inputs = [{"text": text, "head": h, "tail": t} for _, text, h, t, _ in recs]
        return Examples(texts=[self.marked(i, typed=False) for i in inputs], labels=[r[4] for r in recs],
                        origin=[r[0] for r in recs], name=name, inputs=inputs)

    def read(self, ref: str, data_cfg: Any) -> dict[str, Examples]:
        """Built-in bbc_relations, or JSONL: {text, head: {start, end[, type]}, tail: {...}, label}, or
        {text with <e1>..</e1> and <e2>..</e2>, label}."""
        if ref == "bbc_relations":
            from transferkit.data.annotated import records

            recs = [(w, para, _span(r["head"], para, w, "head"), _span(r["tail"], para, w, "tail"), r["label"])
                    for w, r, para in records("bbc_relations")]
            return {"train": self._examples(recs, "train")}
        p = Path(ref)
        if not p.is_file() or p.suffix.lower() not in (".jsonl", ".json"):
            raise DataError(f"relation data '{ref}' is neither the built-in 'bbc_relations' nor a .jsonl file.")
        recs = [(where, *self._record(obj, where), obj.get(self.label_column)) for where, obj in iter_jsonl(p)]
        if not recs:
            raise DataError(f"{p}: no records found.")
        return {"train": self._examples(recs, "train")}

    def _record(self, obj: dict[str, Any], where: str) -> tuple[str, dict, dict]:
        text = obj.get(self.text_column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: no text in '{self.text_column}'.")
        if self.head_column in obj or self.tail_column in obj:
            return (text, _span(obj.get(self.head_column), text, where, "head"),
                    _span(obj.get(self.tail_column), text, where, "tail"))
        return parse_inline(text, where)

    def fit_labels(self, train: Examples) -> None:
        super().fit_labels(train)
        self.entity_types = sorted({s["type"] for i in train.inputs or [] for s in (i["head"], i["tail"]) if s["type"]})

    def examples_for_prediction(self, items: list[Any], pairs: list[str] | None = None) -> Examples:
        recs = []
        for n, it in enumerate(items, start=1):
            text, h, t = self._record(it if isinstance(it, dict) else {self.text_column: str(it)}, f"input {n}")
            recs.append((f"input {n}", text, h, t, None))
        return self._examples(recs, "input")

    # ------------------------------------------------------------------ markers

    def marker_tokens(self) -> list[str]:
        out = ["<e1>", "</e1>", "<e2>", "</e2>"]
        if self.markers == "typed":
            out += [f"<{r}:{t}>" for t in self.entity_types for r in ("e1", "/e1", "e2", "/e2")]
        return out

    def _tag(self, role: str, span: dict[str, Any], close: bool) -> str:
        typed = self.markers == "typed" and span["type"] in self.entity_types
        slash = "/" if close else ""
        return f"<{slash}{role}:{span['type']}>" if typed else f"<{slash}{role}>"

    def marked(self, inp: dict[str, Any], typed: bool = True) -> str:
        text, h, t = inp["text"], inp["head"], inp["tail"]
        inserts = []
        for role, s in (("e1", h), ("e2", t)):
            if typed:
                inserts += [(s["start"], 1, self._tag(role, s, False)), (s["end"], 0, self._tag(role, s, True))]
            else:
                inserts += [(s["start"], 1, f"<{role}>"), (s["end"], 0, f"</{role}>")]
        out, pos = [], 0
        for at, _, tok in sorted(inserts):  # at equal offsets, an end marker comes before a start marker
            out += [text[pos:at], f" {tok} "]
            pos = at
        out.append(text[pos:])
        return "".join(out)

    def add_markers(self, tokenizer: Any) -> None:
        missing = [m for m in self.marker_tokens() if m not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing},
                                         replace_extra_special_tokens=False)

    def _window(self, ids: list[int], starts: list[int], budget: int) -> list[int]:
        """At most `budget` ids keeping both start markers: centred on the two entities, or two halves
        around each when they are too far apart."""
        if len(ids) <= budget:
            return ids
        a, b = min(starts), max(starts)
        if b - a + 8 <= budget:
            lo = max(0, min(a - (budget - (b - a)) // 2, len(ids) - budget))
            return ids[lo:lo + budget]
        half = budget // 2
        lo_a = max(0, a - half // 4)
        lo_b = max(lo_a + half, b - half // 4)
        return ids[lo_a:lo_a + half] + ids[lo_b:lo_b + budget - half]

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        self.add_markers(tokenizer)
        self.pad_token_id = tokenizer.pad_token_id or 0
        texts = [self.marked(i) for i in split.inputs or []]
        enc = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
        head_ids, tail_ids = self.marker_ids(tokenizer)
        index = {label: i for i, label in enumerate(self.labels)}
        feats = []
        for i, ids in enumerate(enc["input_ids"]):
            starts = [next((k for k, x in enumerate(ids) if x in group), 0) for group in (head_ids, tail_ids)]
            body = self._window(ids, starts, self.max_length - 2)
            f: dict[str, Any] = {"input_ids": [tokenizer.cls_token_id, *body, tokenizer.sep_token_id]}
            y = split.labels[i]
            if y is not None:
                f["labels"] = index[str(y).strip()]
            feats.append(f)
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats], meta={"inputs": split.inputs})

    def marker_ids(self, tokenizer: Any) -> tuple[list[int], list[int]]:
        vocab = tokenizer.get_vocab()
        head = [vocab[m] for m in self.marker_tokens() if m.startswith("<e1") and m in vocab]
        tail = [vocab[m] for m in self.marker_tokens() if m.startswith("<e2") and m in vocab]
        return head, tail

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transferkit.modeling.load import instantiate, model_config

        self.add_markers(tokenizer)
        config = model_config(ref, init, size, tokenizer, dropout, self.labels)
        if self.pooling == "markers":
            if config.model_type != "bert":
                raise ConfigError([f"task -> relation -> pooling: 'markers' is implemented for BERT-family models, "
                                   f"this one is '{config.model_type}'. Use pooling: cls."])
            config.head_marker_ids, config.tail_marker_ids = self.marker_ids(tokenizer)
            self.model_class().register_for_auto_class("AutoModelForSequenceClassification")
        if init == "scratch":
            config.vocab_size = max(config.vocab_size, len(tokenizer))
        model = instantiate(self.model_class(), ref, init, config)
        if model.get_input_embeddings().weight.shape[0] < len(tokenizer):
            # new marker rows: drawn around the mean of the pretrained embeddings (transformers' mean_resizing)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        return model

    def model_class(self, config: Any = None) -> Any:
        from transformers import AutoModelForSequenceClassification

        from transferkit.modeling.heads import BertForRelationClassification

        return BertForRelationClassification if self.pooling == "markers" else AutoModelForSequenceClassification

    def forward(self, model: nn.Module, batch: dict[str, Any]):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    # ------------------------------------------------------------------ evaluation

    baseline_names = {"majority": "Majority label per entity-type pair"}

    def majority_scores(self, train: Encoded, test: Encoded) -> np.ndarray:
        """What the entity types alone predict: the most frequent training label of each (head type, tail
        type) pair (the overall majority for pairs not seen in training). Typed markers hand the model
        this much for free, so it is the baseline to beat."""
        pair = lambda inp: (inp["head"]["type"], inp["tail"]["type"])  # noqa: E731
        counts: dict[Any, collections.Counter] = collections.defaultdict(collections.Counter)
        gold = self.gold(train)
        for inp, y in zip(train.meta["inputs"], gold):
            counts[pair(inp)][int(y)] += 1
        overall = collections.Counter(int(y) for y in gold).most_common(1)[0][0]
        scores = np.zeros((len(test), len(self.labels)))
        for i, inp in enumerate(test.meta["inputs"]):
            c = counts.get(pair(inp))
            scores[i, c.most_common(1)[0][0] if c else overall] = 1.0
        return scores

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        """accuracy, macro F1 over all classes, and micro P/R/F1 over the relation classes only (a
        no-relation prediction is neither a true nor a false positive)."""
        out = super().metrics(scores, labels)
        pred = self.decide(scores)
        gold = np.asarray(labels)
        na = self.labels.index(self.no_relation) if self.no_relation in self.labels else -1
        pos_pred, pos_gold = pred != na, gold != na
        correct = int(((pred == gold) & pos_pred).sum())
        p = correct / max(int(pos_pred.sum()), 1)
        r = correct / max(int(pos_gold.sum()), 1)
        out.update(precision=p, recall=r, f1=2 * p * r / (p + r) if p + r else 0.0)
        return out

    def decode(self, scores: Any, encoded: Encoded | None = None) -> list[dict[str, Any]]:
        out = super().decode(scores)
        if encoded is not None:
            for item, inp in zip(out, encoded.meta["inputs"]):
                h, t = inp["head"], inp["tail"]
                item["head"] = inp["text"][h["start"]:h["end"]]
                item["tail"] = inp["text"][t["start"]:t["end"]]
        return out
