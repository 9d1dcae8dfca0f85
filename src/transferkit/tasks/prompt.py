"""Prompt-based classification (PET, Schick & Schuetze 2021; LM-BFF, Gao et al. 2021): each text is put into a
cloze pattern ("{text} It was [MASK].") and the model's own masked-LM head scores one word per label at the mask
(the verbalizer: positive -> great, negative -> terrible). Those scores are the class logits, so the loss,
metrics, decoding, threshold tuning and every method are the classification task's; only the input pattern and
the head differ. Before any training the same model is a zero-shot classifier (the cloze baseline of
evaluation/zeroshot.py); fine-tuning it with few labels starts from a head that already means something.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferkit.data.sources import Examples
from transferkit.errors import ConfigError, DataError
from transferkit.tasks.base import Encoded
from transferkit.tasks.classification import ClassificationTask


def verbalizer_ids(tokenizer: Any, verbalizer: dict[str, str], labels: list[str]) -> list[int]:
    """The vocabulary id of each label's word, in label order. A word that is not exactly one token, a label
    without a word and two labels sharing a token are ConfigErrors that say which."""
    missing = [y for y in labels if y not in verbalizer]
    if missing:
        raise ConfigError([f"task -> prompt -> verbalizer: no word for label(s) {missing} (labels: {labels})"])
    ids: list[int] = []
    for y in labels:
        word = verbalizer[y].strip()
        pieces = tokenizer.tokenize(word)
        if len(pieces) != 1 and not word.startswith(" "):  # byte-level BPE vocabularies mark the leading space
            spaced = tokenizer.tokenize(" " + word)
            pieces = spaced if len(spaced) == 1 else pieces
        if len(pieces) != 1:
            raise ConfigError([f"task -> prompt -> verbalizer -> {y}: '{word}' is not one token of the model's "
                               f"vocabulary (it splits into {pieces}); the masked-LM head scores single tokens, so "
                               "choose a word the tokenizer keeps whole"])
        tid = tokenizer.convert_tokens_to_ids(pieces[0])
        if tid == tokenizer.unk_token_id:
            raise ConfigError([f"task -> prompt -> verbalizer -> {y}: '{word}' is unknown to the model's "
                               f"vocabulary (it becomes {tokenizer.unk_token}); choose another word"])
        ids.append(int(tid))
    seen: dict[int, str] = {}
    for y, tid in zip(labels, ids):
        if tid in seen:
            raise ConfigError([f"task -> prompt -> verbalizer: labels '{seen[tid]}' and '{y}' map to the same token "
                               f"'{tokenizer.convert_ids_to_tokens(tid)}'; give each label its own word"])
        seen[tid] = y
    return ids


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one text ([CLS] ... [SEP], <s> ... </s>)."""
    full = tokenizer("x")["input_ids"]
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k:k + len(bare)] == bare:
            return full[:k], full[k + len(bare):]
    return [], []


def check_mlm_head(ref: str, info: dict[str, Any], where: str = "model -> path") -> None:
    """A checkpoint loaded as a masked LM whose head weights were missing (initialised at random) is refused."""
    head = [k for k in info.get("missing_keys", []) if "predictions" in k or "lm_head" in k or k.startswith("cls.")]
    if head:
        raise ConfigError([f"{where}: '{ref}' has no masked-LM head (its checkpoint holds the encoder only; "
                           f"missing {head[0]}...), so the cloze scores would be random. Use a model with one, e.g. "
                           "the model/ of a `transferkit pretrain` run, which trains the head (the packaged MiniLM "
                           "is a sentence encoder without one)"])


def _mlm_parts(model: nn.Module) -> tuple[nn.Module, Any]:
    """(encoder, head) of a transformers masked LM (also inside a peft wrapper). The head maps a hidden state
    to vocabulary logits; for BERT-family heads only the label words' rows are computed."""
    inner: Any = model
    if hasattr(model, "get_base_model"):
        inner = model.get_base_model()  # type: ignore[operator]
    encoder = getattr(inner, inner.base_model_prefix)
    head = getattr(inner, "cls", None) or getattr(inner, "lm_head", None)
    if head is None:
        raise ConfigError([f"task -> head: 'prompt' is implemented for BERT- and RoBERTa-style masked LMs; this "
                           f"model is {type(inner).__name__}"])
    return encoder, head


@dataclass
class PromptClassificationTask(ClassificationTask):
    template: str = "{text} It was {mask}."
    verbalizer: dict[str, str] = field(default_factory=dict)
    word_ids: list[int] = field(default_factory=list)
    mask_token_id: int | None = None
    baselines: tuple[str, ...] = ("majority", "linear_probe", "zero_shot")

    @classmethod
    def from_config(cls, cfg) -> PromptClassificationTask:
        return cls(labels=list(cfg.task.labels or []), pooling=cfg.task.pooling, max_length=cfg.model.max_length,
                   template=cfg.task.prompt.template, verbalizer=dict(cfg.task.prompt.verbalizer or {}))

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> PromptClassificationTask:
        return cls(labels=d["labels"], max_length=d["max_length"], pad_token_id=d.get("pad_token_id", 0),
                   threshold=d.get("threshold"), temperature=d.get("temperature", 1.0), template=d["template"], verbalizer=d["verbalizer"],
                   word_ids=d.get("word_ids", []), mask_token_id=d.get("mask_token_id"))

    def model_class(self, config: Any = None) -> Any:
        from transformers import AutoModelForMaskedLM

        return AutoModelForMaskedLM

    def fit_labels(self, train: Examples) -> None:
        super().fit_labels(train)
        missing = [y for y in self.labels if y not in self.verbalizer]
        if missing:
            raise DataError(f"the training labels {missing} have no word in task.prompt.verbalizer "
                            f"({self.verbalizer}); add one per label")

    # ------------------------------------------------------------------ data

    def pattern_ids(self, tokenizer: Any) -> tuple[list[int], list[int]]:
        """The token ids of the pattern before and after {text} (with the mask token in one of them)."""
        if tokenizer.mask_token is None:
            raise ConfigError(["task -> head: 'prompt' needs a tokenizer with a mask token (a masked LM's)"])
        before, after = self.template.split("{text}")
        enc = lambda s: tokenizer(s.replace("{mask}", tokenizer.mask_token), add_special_tokens=False)["input_ids"]  # noqa: E731
        return (enc(before) if before.strip() else []), (enc(after) if after.strip() else [])

    def encode(self, tokenizer: Any, split: Examples) -> Encoded:
        if split.text_pairs is not None:
            raise DataError("task.head: prompt reads one text per example; the data has text pairs")
        self.pad_token_id = tokenizer.pad_token_id or 0
        self.mask_token_id = tokenizer.mask_token_id
        self.word_ids = verbalizer_ids(tokenizer, self.verbalizer, self.labels)
        before, after = self.pattern_ids(tokenizer)
        head, tail = special_tokens_around(tokenizer)
        budget = self.max_length - len(head) - len(tail) - len(before) - len(after)
        if budget < 1:
            raise ConfigError([f"task -> prompt -> template: the pattern takes {len(before) + len(after)} tokens, "
                               f"leaving no room for the text in model.max_length ({self.max_length})"])
        texts = tokenizer(split.texts, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
        index = {label: i for i, label in enumerate(self.labels)}
        feats: list[dict[str, Any]] = []
        for i, t in enumerate(texts):
            ids = head + before + t + after + tail
            f: dict[str, Any] = {"input_ids": ids, "mask_pos": ids.index(tokenizer.mask_token_id)}
            if split.labels[i] is not None:
                f["labels"] = index[split.labels[i]]
            feats.append(f)
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats])

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().collate(features)
        batch["mask_pos"] = torch.tensor([f["mask_pos"] for f in features], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ model

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module:
        from transformers import AutoModelForMaskedLM

        from transferkit.modeling.load import check_weights, model_config

        config = model_config(ref, init, size, tokenizer, dropout)
        if init == "scratch":
            return AutoModelForMaskedLM.from_config(config)
        check_weights(ref)
        import transformers

        level = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        try:
            model, info = AutoModelForMaskedLM.from_pretrained(ref, config=config, dtype=torch.float32,
                                                               output_loading_info=True)
        finally:
            transformers.logging.set_verbosity(level)
        check_mlm_head(ref, info)
        return model

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(batch, labels) logits: the masked-LM head's scores of the verbalizer words at each mask."""
        encoder, head = _mlm_parts(model)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        hidden = encoder(**inputs).last_hidden_state
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch["mask_pos"]]
        ids = torch.tensor(self.word_ids, device=hidden.device)
        pred = getattr(head, "predictions", None)
        if pred is not None and hasattr(pred, "transform"):  # BERT: transform, then only the label words' rows
            h = pred.transform(at_mask)
            logits = h @ pred.decoder.weight[ids].T
            bias = pred.decoder.bias if pred.decoder.bias is not None else getattr(pred, "bias", None)
            return logits + bias[ids] if bias is not None else logits
        return head(at_mask)[:, ids]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "head": "prompt", "template": self.template, "verbalizer": self.verbalizer,
                "word_ids": self.word_ids, "mask_token_id": self.mask_token_id}
