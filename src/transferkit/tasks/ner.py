"""Named-entity recognition (token classification) with sub-word alignment and sliding windows.

- Words are tokenized into sub-words; the word's tag goes on its first piece (label_subtokens: first, the
  others are ignored by the loss) or on every piece (label_subtokens: all; B- becomes I- on continuations).
- A sentence longer than the model's window is cut into windows that overlap by `stride` pieces and start on
  word boundaries; each word's prediction comes from the window where it sits farthest from an edge.
- Predictions are read from a word's first piece. Metrics are entity-level (seqeval, strict mode for BIO
  and BIOES), micro and macro, per type, with a word-level confusion matrix of entity types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data import tagging
from transferkit.data.sources import Examples
from transferkit.errors import ConfigError, DataError
from transferkit.tasks.base import Encoded, pad_inputs, pad_labels

IGNORE = -100


@dataclass
class TokenClassificationTask:
    types: list[str] = field(default_factory=list)
    scheme: str = "bio"
    label_subtokens: str = "first"
    max_length: int = 128
    stride: int = 32
    pad_token_id: int = 0
    name: str = "token_classification"
    primary_metric: str = "f1"
    token_level: bool = True
    baselines: tuple[str, ...] = ()  # majority and linear probe need one label per example
    # data columns (JSONL)
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    text_column: str = "text"
    entities_column: str = "entities"
    #: a CRF over the word tags (modeling/crf.py); its constrained transition scores once trained
    crf: bool = False
    transitions: dict[str, Any] | None = None
    _crf_module: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, cfg) -> TokenClassificationTask:
        n = cfg.task.ner
        stride = (cfg.model.max_length - 2) // 4 if n.stride is None else n.stride
        if stride >= cfg.model.max_length - 2:
            raise ConfigError([f"task -> ner -> stride: {stride} must be smaller than model.max_length - 2 "
                               f"({cfg.model.max_length - 2})"])
        return cls(types=list(cfg.task.labels or []), scheme=n.scheme, label_subtokens=n.label_subtokens,
                   max_length=cfg.model.max_length, stride=stride, tokens_column=n.tokens_column,
                   tags_column=n.tags_column, text_column=cfg.data.text_column,
                   entities_column=n.entities_column, crf=n.crf)

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> TokenClassificationTask:
        return cls(types=d["types"], scheme=d["scheme"], label_subtokens=d["label_subtokens"],
                   max_length=d["max_length"], stride=d["stride"], pad_token_id=d.get("pad_token_id", 0),
                   crf=bool(d.get("crf")), transitions=d.get("crf"))

    def describe(self) -> dict[str, Any]:
        d = {"task": self.name, "types": self.types, "labels": self.labels, "scheme": self.scheme,
             "label_subtokens": self.label_subtokens, "max_length": self.max_length, "stride": self.stride,
             "pad_token_id": self.pad_token_id}
        if self.crf:
            d["crf"] = self._transitions()
        return d

    def bind_model(self, model: Any) -> None:
        """The model about to be saved or evaluated: its CRF is the one whose scores decode."""
        crf = getattr(model, "crf", None)
        if crf is not None:
            self._crf_module = crf

    def _transitions(self) -> dict[str, Any] | None:
        from transferkit.modeling.crf import crf_scores

        return crf_scores(self._crf_module) if self._crf_module is not None else self.transitions

    @property
    def labels(self) -> list[str]:
        return tagging.label_names(self.types, self.scheme)

    # ------------------------------------------------------------------ data

    def read(self, ref: str, data_cfg: Any) -> dict[str, Examples]:
        """A built-in name, a CoNLL column file or a JSONL file -> Examples (one split)."""
        if ref == "peoples_daily_ner":
            return {"train": tagging.to_examples(tagging.peoples_daily_ner(), "train")}
        p = Path(ref)
        if not p.is_file():
            raise DataError(f"NER data '{ref}' is neither the built-in 'peoples_daily_ner' nor a file "
                            f"(working directory: {Path.cwd()}).")
        if p.suffix.lower() in (".jsonl", ".json"):
            recs = tagging.read_jsonl(p, tokens_column=self.tokens_column, tags_column=self.tags_column,
                                      text_column=self.text_column, entities_column=self.entities_column)
        elif p.suffix.lower() in tagging.CONLL_SUFFIXES:
            recs = tagging.read_conll(p)
        else:
            raise DataError(f"{p}: NER data is a CoNLL column file ({', '.join(tagging.CONLL_SUFFIXES)}) or "
                            f".jsonl, not '{p.suffix}'.")
        if not recs:
            raise DataError(f"{p}: no sentences found.")
        return {"train": tagging.to_examples(recs, "train")}

    def fit_labels(self, train: Examples) -> None:
        found = sorted({s[2] for spans in train.labels for s in spans})
        if not self.types:
            self.types = found
        else:
            self.check(train)
        if not self.types:
            raise ConfigError(["task: the NER training data has no entities"])

    def check(self, split: Examples) -> None:
        known = set(self.types)
        bad = [f"{split.origin[i]} ('{s[2]}')" for i, spans in enumerate(split.labels) for s in spans
               if s[2] not in known]
        if bad:
            raise DataError(f"{len(bad)} entities in the {split.name} split have types the training data does "
                            f"not have: {'; '.join(bad[:5])}. Known types: {self.types}.")

    def examples_for_prediction(self, items: list[Any], pairs: list[str] | None = None) -> Examples:
        """Raw texts (split into words here) or {'tokens': [...]} records."""
        recs = []
        for i, it in enumerate(items):
            if isinstance(it, dict) and "tokens" in it:
                recs.append(tagging._record([str(t) for t in it["tokens"]], [], f"input {i + 1}"))
            else:
                text = it.get("text", "") if isinstance(it, dict) else str(it)
                words, offsets = tagging.split_words(text)
                recs.append(tagging._record(words, [], f"input {i + 1}", text, offsets))
        return Examples(texts=[" ".join(r["tokens"]) for r in recs], labels=[None] * len(recs),
                        origin=[r["origin"] for r in recs], name="input",
                        inputs=[{"tokens": r["tokens"], "text": r["text"], "offsets": r["offsets"]} for r in recs],
                        stratify=False)

    def word_tags(self, split: Examples) -> list[list[str]]:
        return [tagging.spans_to_tags([tuple(s) for s in spans], len(inp["tokens"]), self.scheme)
                for spans, inp in zip(split.labels, split.inputs or [])]

    def _piece_labels(self, tags: list[str], word_ids: list[int | None]) -> list[int]:
        index = {t: i for i, t in enumerate(self.labels)}
        out, prev = [], None
        counts: dict[int, int] = {}
        for w in word_ids:
            if w is not None:
                counts[w] = counts.get(w, 0) + 1
        seen: dict[int, int] = {}
        for w in word_ids:
            if w is None:
                out.append(IGNORE)
            elif w != prev:
                seen[w] = 1
                out.append(index[tagging.first_piece(tags[w], counts[w] == 1, self.scheme)
                                 if self.label_subtokens == "all" else tags[w]])
            elif self.label_subtokens == "all":
                seen[w] += 1
                out.append(index[tagging.continuation(tags[w], seen[w] == counts[w], self.scheme)])
            else:
                out.append(IGNORE)
            prev = w
        return out

    def windows(self, word_ids: list[int]) -> list[tuple[int, int]]:
        """Piece ranges [start, end) of at most max_length - 2 pieces, overlapping by about `stride`,
        starting and (unless a single word is longer than a window) ending on word boundaries."""
        body, n = self.max_length - 2, len(word_ids)
        if n <= body:
            return [(0, n)]
        starts_word = [i == 0 or word_ids[i] != word_ids[i - 1] for i in range(n)] + [True]
        out, start = [], 0
        while True:
            end = min(start + body, n)
            if end < n:
                e = end
                while e > start and not starts_word[e]:
                    e -= 1
                end = e if e > start else end
            out.append((start, end))
            if end >= n:
                return out
            nxt = max(end - self.stride, start + 1)
            while nxt < end and not starts_word[nxt]:
                nxt += 1
            start = nxt if nxt < end else end

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(["NER needs a fast tokenizer (word alignment); this model has a slow one"])
        self.pad_token_id = tokenizer.pad_token_id or 0
        words = [inp["tokens"] for inp in split.inputs or []]
        enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False)
        tags = self.word_tags(split) if split.labels and split.labels[0] is not None else None
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        feats: list[dict[str, Any]] = []
        for i in range(len(split)):
            ids, wids = enc["input_ids"][i], enc.word_ids(i)
            for s, e in self.windows(wids):
                w = [None, *wids[s:e], None]
                f: dict[str, Any] = {"input_ids": [cls_id, *ids[s:e], sep_id], "word_ids": w, "example": i}
                if tags is not None:
                    f["labels"] = self._piece_labels(tags[i], w)
                feats.append(f)
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats],
                       meta={"n_examples": len(split), "n_words": [len(w) for w in words], "inputs": split.inputs,
                             "gold": tags})

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.pad_token_id)
        if "labels" in features[0]:
            batch["labels"] = pad_labels(features, batch["input_ids"].shape[1], IGNORE)
        return batch

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transferkit.modeling.load import instantiate, model_config

        config = model_config(ref, init, size, tokenizer, dropout, self.labels)
        model = instantiate(self.model_class(), ref, init, config)
        if self.crf:
            from transferkit.modeling.crf import constrained_crf

            model.crf = constrained_crf(self.labels, self.scheme.upper())  # trained with the model, in its state
        return model

    @staticmethod
    def model_class(config: Any = None) -> Any:
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.crf:
            self.bind_model(getattr(model, "module", model))  # DDP wraps it
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.crf and self._crf_module is not None:
            return self._crf_loss(outputs.float(), batch["labels"])
        return nn.functional.cross_entropy(outputs.float().flatten(0, 1), batch["labels"].flatten(),
                                           ignore_index=IGNORE)

    def _crf_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CRF negative log-likelihood of the word tags (the labelled first pieces, in order), per word."""
        mask = labels != IGNORE
        lengths = mask.sum(dim=1)
        keep = lengths > 0
        if not bool(keep.any()):
            return logits.sum() * 0.0
        width = int(lengths.max())
        order = torch.argsort((~mask).int(), dim=1, stable=True)[:, :width]  # labelled positions first, in order
        em = logits.gather(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        tags = labels.gather(1, order).clamp(min=0)
        on = torch.arange(width, device=labels.device)[None] < lengths[:, None]
        nll = -self._crf_module(em[keep], tags[keep], on[keep], reduction="sum")
        return nll / lengths.sum()

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=-1)

    # ------------------------------------------------------------------ evaluation

    def postprocess(self, scores: list[np.ndarray], encoded: Encoded) -> list[np.ndarray]:
        """Per example, a (words x labels) probability matrix: each word read at its first piece, from the
        window where that piece is farthest from a window edge. Words with no piece get 'O'."""
        n_words = encoded.meta["n_words"]
        out = [np.zeros((k, len(self.labels)), dtype=np.float32) for k in n_words]
        for o in out:
            o[:, 0] = 1.0
        best = [np.full(k, -1, dtype=np.int64) for k in n_words]
        for f, s in zip(encoded.features, scores):
            ex, w = f["example"], f["word_ids"]
            width = len(w)
            for pos in range(1, width - 1):
                wi = w[pos]
                if wi is None or w[pos - 1] == wi:
                    continue
                margin = min(pos, width - 1 - pos)
                if margin > best[ex][wi]:
                    best[ex][wi] = margin
                    out[ex][wi] = s[pos]
        return out

    def tags_of(self, probs: np.ndarray) -> list[str]:
        labels = self.labels
        trans = self._transitions() if self.crf else None
        if trans is not None and len(probs):
            from transferkit.modeling.crf import viterbi

            # log-probabilities differ from the logits by a constant per word: the same best path
            path = viterbi(np.log(np.asarray(probs, dtype=np.float64) + 1e-12), np.asarray(trans["start_transitions"]),
                           np.asarray(trans["end_transitions"]), np.asarray(trans["transitions"]))
            return [labels[j] for j in path]
        tags = [labels[int(j)] for j in probs.argmax(axis=-1)] if len(probs) else []
        if self.scheme == "bioes" and self.label_subtokens == "all":
            # a word's first piece was trained as B- (word tagged S-) or I- (word tagged E-): rebuild the
            # word-level tags from the spans they describe
            tags = tagging.spans_to_tags(tagging.tags_to_spans(tags), len(tags), "bioes")
        return tags

    def gold(self, encoded: Encoded) -> list[list[str]]:
        return encoded.meta["gold"]

    def metrics(self, scores: list[np.ndarray], labels: list[list[str]]) -> dict[str, Any]:
        from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
        from seqeval.scheme import IOB2, IOBES

        pred = [self.tags_of(p) for p in scores]
        kw: dict[str, Any] = {"mode": "strict", "scheme": IOBES if self.scheme == "bioes" else IOB2}
        if self.scheme == "io":
            kw = {}  # IO has no strict scheme in seqeval: conlleval-style reading
        out: dict[str, Any] = {
            "f1": float(f1_score(labels, pred, average="micro", zero_division=0, **kw)),
            "precision": float(precision_score(labels, pred, average="micro", zero_division=0, **kw)),
            "recall": float(recall_score(labels, pred, average="micro", zero_division=0, **kw)),
            "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0, **kw)),
        }
        rep = classification_report(labels, pred, output_dict=True, zero_division=0, **kw)
        out["per_class"] = {t: {"precision": float(rep[t]["precision"]), "recall": float(rep[t]["recall"]),
                                "f1": float(rep[t]["f1-score"]), "support": int(rep[t]["support"])}
                            for t in self.types if t in rep}
        # word-level confusion of entity types (prefixes dropped): which types get mistaken for which
        names = ["O", *self.types]
        idx = {t: i for i, t in enumerate(names)}
        m = np.zeros((len(names), len(names)), dtype=int)
        for g, p in zip(labels, pred):
            for a, b in zip(g, p):
                m[idx.get(a.partition("-")[2] or "O", 0), idx.get(b.partition("-")[2] or "O", 0)] += 1
        out["confusion_matrix"] = m.tolist()
        out["confusion_labels"] = names
        return out

    def decode(self, scores: list[np.ndarray], encoded: Encoded | None = None) -> list[dict[str, Any]]:
        """Per example: entities (type, text, word span, character span when the text is known, mean
        probability) and the word tags."""
        inputs = encoded.meta["inputs"] if encoded is not None else [None] * len(scores)
        out = []
        for probs, inp in zip(scores, inputs):
            tags = self.tags_of(probs)
            ents = []
            for s, e, t in tagging.tags_to_spans(tags):
                ent: dict[str, Any] = {"type": t, "score": round(float(probs[s:e].max(axis=-1).mean()), 6),
                                       "word_start": s, "word_end": e}
                if inp is not None and inp.get("offsets"):
                    a, b = inp["offsets"][s][0], inp["offsets"][e - 1][1]
                    ent.update(text=inp["text"][a:b], start=a, end=b)
                elif inp is not None:
                    ent["text"] = " ".join(inp["tokens"][s:e])
                ents.append(ent)
            item: dict[str, Any] = {"entities": ents}
            if inp is not None:
                item["tokens"] = inp["tokens"]
            item["tags"] = tags
            out.append(item)
        return out
