"""Text classification: binary, multiclass and multilabel; [CLS]/pooler or mean-pooled head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.data.checks import check_known_labels
from transferkit.data.sources import Examples
from transferkit.errors import ConfigError, DataError
from transferkit.tasks.base import Encoded, pad_inputs


def _is_number(label: str) -> bool:
    try:
        float(label)
    except ValueError:
        return False
    return True


def check_label_forms(train: Examples, found: list[str]) -> None:
    """Refuse labels that mix numbers and words (1 and 'pos'): they would train as separate classes,
    which is almost always two encodings of the same labels. Listing them in task.labels accepts them."""
    numbers = [y for y in found if _is_number(y)]
    words = [y for y in found if not _is_number(y)]
    if not numbers or not words:
        return
    first: dict[str, str] = {}
    for origin, ys in zip(train.origin, train.labels):
        for y in ys if isinstance(ys, list) else [ys]:
            first.setdefault(y, origin)
    example = f"{first[numbers[0]]} has '{numbers[0]}', {first[words[0]]} has '{words[0]}'"
    raise DataError(
        f"the training labels mix numbers {numbers[:6]} and words {words[:6]} ({example}): they would be "
        f"trained as {len(found)} separate classes. Write every label in one form (e.g. 0/1 or neg/pos), or, "
        f"if they really are {len(found)} different classes, list them in task.labels."
    )


@dataclass
class ClassificationTask:
    labels: list[str] = field(default_factory=list)
    pooling: str = "cls"
    multilabel: bool = False
    label_separator: str = ","
    max_length: int = 128
    pad_token_id: int = 0
    name: str = "text_classification"
    #: binary tasks: predict labels[1] when its probability >= threshold (set by threshold tuning); None: argmax
    threshold: float | None = None
    #: single-label tasks: probabilities are softmax(logits / temperature) (fitted by methods.temperature_scaling)
    temperature: float = 1.0
    token_level = False  # one fixed-width score row per example
    baselines: tuple[str, ...] = ("majority", "linear_probe", "zero_shot")

    @classmethod
    def from_config(cls, cfg) -> ClassificationTask:
        if cls is ClassificationTask and cfg.task.head == "prompt":  # the masked-LM head scores label words
            from transferkit.tasks.prompt import PromptClassificationTask

            return PromptClassificationTask.from_config(cfg)
        return cls(labels=list(cfg.task.labels or []), pooling=cfg.task.pooling, multilabel=cfg.task.multilabel,
                   label_separator=cfg.task.label_separator, max_length=cfg.model.max_length)

    def model_class(self, config: Any = None) -> Any:
        """The class that loads this task's saved model folder (`config`: the folder's config)."""
        from transformers import AutoModelForSequenceClassification

        from transferkit.modeling.heads import BertMeanPoolingForSequenceClassification

        archs = (getattr(config, "architectures", None) or []) if config is not None else []
        if BertMeanPoolingForSequenceClassification.__name__ in archs or (config is None and self.pooling == "mean"):
            return BertMeanPoolingForSequenceClassification
        return AutoModelForSequenceClassification

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> ClassificationTask:
        if cls is ClassificationTask and d.get("head") == "prompt":
            from transferkit.tasks.prompt import PromptClassificationTask

            return PromptClassificationTask.from_description(d)
        return cls(labels=d["labels"], pooling=d["pooling"], multilabel=d["multilabel"],
                   label_separator=d.get("label_separator", ","), max_length=d["max_length"],
                   pad_token_id=d.get("pad_token_id", 0), threshold=d.get("threshold"),
                   temperature=d.get("temperature", 1.0))

    @property
    def primary_metric(self) -> str:
        return "micro_f1" if self.multilabel else "accuracy"

    # ------------------------------------------------------------------ labels

    def _split_labels(self, y: Any) -> list[str]:
        if isinstance(y, list):
            return [str(v).strip() for v in y]
        return [v.strip() for v in str(y).split(self.label_separator) if v.strip()]

    def normalize_labels(self, split: Examples) -> None:
        """Labels as strings (multiclass) or lists of strings (multilabel), in place."""
        if self.multilabel:
            split.labels = [self._split_labels(y) for y in split.labels]
        else:
            split.labels = [str(y).strip() for y in split.labels]

    def fit_labels(self, train: Examples) -> None:
        self.normalize_labels(train)
        found = sorted({y for ys in train.labels for y in (ys if self.multilabel else [ys])})
        if not self.labels:
            check_label_forms(train, found)
            if len(found) > 20 and len(found) > 0.5 * len(train):
                raise DataError(
                    f"the label column has {len(found)} different values for {len(train)} training examples (e.g. "
                    f"{', '.join(repr(y[:40]) for y in found[:3])}): is data.label_column the text column? Set "
                    "data.label_column to the column holding the labels.")
            self.labels = found
        else:
            check_known_labels(train, self.labels)
        if len(self.labels) < 2:
            raise DataError(f"the training split has only one label ({found}) among its {len(train)} example(s): "
                            "classification needs examples of at least 2 labels. Give more data (the split into "
                            "train/validation/test may have left one label out of a very small file).")

    def check(self, split: Examples) -> None:
        self.normalize_labels(split)
        check_known_labels(split, self.labels)

    # ------------------------------------------------------------------ data

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        self.pad_token_id = tokenizer.pad_token_id or 0
        enc = tokenizer(split.texts, split.text_pairs, truncation=True, max_length=self.max_length,
                        return_attention_mask=False, return_token_type_ids=split.text_pairs is not None)
        index = {label: i for i, label in enumerate(self.labels)}
        feats: list[dict[str, Any]] = []
        for i, ids in enumerate(enc["input_ids"]):
            f: dict[str, Any] = {"input_ids": ids}
            if split.text_pairs is not None:
                f["token_type_ids"] = enc["token_type_ids"][i]
            y = split.labels[i]
            if y is not None:
                if self.multilabel:
                    f["labels"] = [index[v] for v in y]
                else:
                    f["labels"] = index[y]
            feats.append(f)
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats])

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(features)
        batch = pad_inputs(features, self.pad_token_id)
        if "labels" in features[0]:
            if self.multilabel:
                y = torch.zeros((n, len(self.labels)))
                for i, f in enumerate(features):
                    y[i, f["labels"]] = 1.0
                batch["labels"] = y
            else:
                batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        from transferkit.modeling.heads import BertMeanPoolingForSequenceClassification
        from transferkit.modeling.load import instantiate, model_config

        problem = "multi_label_classification" if self.multilabel else "single_label_classification"
        config = model_config(ref, init, size, tokenizer, dropout, self.labels, problem_type=problem)
        cls: Any = AutoModelForSequenceClassification
        if self.pooling == "mean":
            if config.model_type != "bert":
                raise ConfigError([f"task -> pooling: 'mean' is implemented for BERT-family models, "
                                   f"this one is '{config.model_type}'. Use pooling: cls."])
            cls = BertMeanPoolingForSequenceClassification
            cls.register_for_auto_class("AutoModelForSequenceClassification")
        return instantiate(cls, ref, init, config)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.multilabel:
            return nn.functional.binary_cross_entropy_with_logits(outputs.float(), batch["labels"])
        return nn.functional.cross_entropy(outputs.float(), batch["labels"])

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        outputs = outputs.float()
        return torch.sigmoid(outputs) if self.multilabel else torch.softmax(outputs / self.temperature, dim=-1)

    # ------------------------------------------------------------------ evaluation

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

        scores = np.asarray(scores)
        labels = np.asarray(labels)
        idx = list(range(len(self.labels)))
        out: dict[str, Any]
        if self.multilabel:
            pred = (scores >= 0.5).astype(int)
            p, r, f, s = precision_recall_fscore_support(labels, pred, zero_division=0)
            out = {"micro_f1": float(f1_score(labels, pred, average="micro", zero_division=0)),
                   "macro_f1": float(f1_score(labels, pred, average="macro", zero_division=0)),
                   "subset_accuracy": float(accuracy_score(labels, pred))}
        else:
            pred = self.decide(scores)
            p, r, f, s = precision_recall_fscore_support(labels, pred, labels=idx, zero_division=0)
            out = {"accuracy": float(accuracy_score(labels, pred)),
                   "macro_f1": float(f1_score(labels, pred, labels=idx, average="macro", zero_division=0)),
                   "confusion_matrix": confusion_matrix(labels, pred, labels=idx).tolist()}
            out.update(calibration_metrics(scores, labels, self.temperature))
        out["per_class"] = {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                                   "support": int(s[i])} for i, name in enumerate(self.labels)}
        return out

    def decode(self, scores: Any, encoded: Encoded | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        scores = np.asarray(scores)
        chosen = None if self.multilabel else self.decide(scores)
        for i, row in enumerate(scores):
            probs = {name: round(float(v), 6) for name, v in zip(self.labels, row)}
            if chosen is None:
                out.append({"labels": [n for n, v in zip(self.labels, row) if v >= 0.5], "scores": probs})
            else:
                k = int(chosen[i])
                out.append({"label": self.labels[k], "score": float(row[k]), "probabilities": probs})
        return out

    def decide(self, scores: Any) -> np.ndarray:
        """Class index per row: argmax, or for a binary task with a tuned threshold, labels[1] when its
        probability reaches it."""
        scores = np.asarray(scores)
        if self.threshold is not None and scores.shape[-1] == 2:
            return (scores[:, 1] >= self.threshold).astype(int)
        return scores.argmax(axis=-1)

    def gold(self, encoded: Encoded) -> np.ndarray:
        """Gold labels of an encoded split in the layout `metrics` expects."""
        if self.multilabel:
            y = np.zeros((len(encoded), len(self.labels)), dtype=int)
            for i, f in enumerate(encoded.features):
                y[i, f["labels"]] = 1
            return y
        return np.array([f["labels"] for f in encoded.features])

    def describe(self) -> dict[str, Any]:
        d = {"task": self.name, "labels": self.labels, "pooling": self.pooling, "multilabel": self.multilabel,
             "label_separator": self.label_separator, "max_length": self.max_length, "pad_token_id": self.pad_token_id}
        if self.threshold is not None:
            d["threshold"] = self.threshold
        if self.temperature != 1.0:
            d["temperature"] = self.temperature
        return d


def calibration_metrics(scores: Any, labels: Any, temperature: float) -> dict[str, Any]:
    """ECE, NLL and the reliability bins of single-label probabilities; with a fitted temperature, the same
    for the uncalibrated probabilities (the logits at temperature 1), so a report shows both."""
    from transferkit.evaluation.calibration import nll, reliability, rescale

    rel = reliability(scores, labels)
    out: dict[str, Any] = {"ece": rel["ece"], "nll": nll(scores, labels), "reliability": rel}
    if temperature != 1.0:
        raw = rescale(scores, 1.0 / temperature)
        before = reliability(raw, labels)
        out.update(ece_uncalibrated=before["ece"], nll_uncalibrated=nll(raw, labels), reliability_uncalibrated=before,
                   temperature=temperature)
    return out
