"""Masked language modelling (+ an optional sentence-pair objective) as a Task: pretraining runs through
the same fit() loop, evaluation and checkpointing as fine-tuning.

Masks are drawn when a batch is collated (dynamic masking: a new mask every epoch), from a generator seeded
by torch's RNG, so a resumed run draws the same masks. Held-out sequences get fixed masks (`fix_masks`), so
held-out loss is comparable across evaluations. The MLM head runs only on the selected positions (~15% of
tokens): the vocabulary projection is the largest matrix of a small BERT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.tasks.base import Encoded
from transferkit.tasks.masking import IGNORE, corrupt, select


class SparseMLMModel(nn.Module):
    """Wraps a transformers BERT MLM model (BertForMaskedLM, or BertForPreTraining with the pair head):
    encoder -> hidden states at the selected positions -> MLM head. `lm` is what gets saved."""

    def __init__(self, lm: nn.Module, pair: bool) -> None:
        super().__init__()
        self.lm = lm
        self.pair = pair

    def forward(self, input_ids, attention_mask, mlm_labels, token_type_ids=None, pair_label=None):
        selected = mlm_labels != IGNORE
        lm = self.lm
        if hasattr(lm, "bert") and hasattr(lm, "cls"):
            enc = lm.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            head = lm.cls.predictions if hasattr(lm.cls, "predictions") else lm.cls
            logits = head(enc.last_hidden_state[selected])
            pair_logits = lm.cls.seq_relationship(enc.pooler_output) if self.pair else None
        else:  # other MLM architectures: full logits, then select
            out = lm(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            logits = out.logits[selected]
            pair_logits = None
        rows = selected.nonzero()[:, 0]
        return {"mlm_logits": logits, "mlm_targets": mlm_labels[selected], "mlm_rows": rows,
                "pair_logits": pair_logits, "batch_size": input_ids.shape[0]}


@dataclass
class MaskedLMTask:
    mask_id: int
    pad_id: int
    vocab_size: int
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    whole_word: bool = True
    pair: str = "none"  # none | nsp | sop
    name: str = "masked_lm"
    baselines: tuple[str, ...] = ()
    primary_metric: str = "mlm_loss"

    # ------------------------------------------------------------------ data

    def encoded(self, features: list[dict[str, Any]]) -> Encoded:
        return Encoded(features=features, lengths=[len(f["input_ids"]) for f in features])

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))

    def _mask_one(self, f: dict[str, Any], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(f["input_ids"])
        words = np.asarray(f["word_ids"])
        chosen = select(words, self.mlm_probability, rng, self.whole_word)
        return corrupt(ids, words, chosen, rng, mask_id=self.mask_id, vocab_size=self.vocab_size,
                       mask_fraction=self.mask_fraction, random_fraction=self.random_fraction,
                       whole_word=self.whole_word)

    def fix_masks(self, encoded: Encoded, seed: int) -> Encoded:
        """The same masks at every evaluation (held-out data)."""
        rng = np.random.default_rng(seed)
        feats = []
        for f in encoded.features:
            ids, labels = self._mask_one(f, rng)
            feats.append({**f, "masked_ids": ids.tolist(), "mlm_labels": labels.tolist()})
        return Encoded(features=feats, lengths=encoded.lengths, meta=encoded.meta)

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        n = len(features)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        labels = np.full((n, width), IGNORE, dtype=np.int64)
        attn = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        rng = None
        for i, f in enumerate(features):
            if "mlm_labels" in f:
                x, y = np.asarray(f["masked_ids"]), np.asarray(f["mlm_labels"])
            else:
                rng = rng or self._rng()
                x, y = self._mask_one(f, rng)
            L = len(x)
            ids[i, :L], labels[i, :L], attn[i, :L] = x, y, 1
            if "token_type_ids" in f:
                types[i, :L] = f["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attn),
                 "token_type_ids": torch.from_numpy(types), "mlm_labels": torch.from_numpy(labels)}
        if self.pair != "none":
            batch["pair_label"] = torch.tensor([f["pair_label"] for f in features], dtype=torch.long)
        return batch

    # ------------------------------------------------------------------ model

    def wrap(self, lm: nn.Module) -> SparseMLMModel:
        return SparseMLMModel(lm, pair=self.pair != "none")

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        return model(**batch)

    def loss(self, outputs: dict[str, Any], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = nn.functional.cross_entropy(outputs["mlm_logits"].float(), outputs["mlm_targets"])
        if outputs["pair_logits"] is not None:
            loss = loss + nn.functional.cross_entropy(outputs["pair_logits"].float(), batch["pair_label"])
        return loss

    def scores(self, outputs: dict[str, Any]) -> torch.Tensor:
        """Per sequence: [summed MLM loss, predicted tokens, correct tokens, pair correct (nan without)]."""
        logits = outputs["mlm_logits"].float()
        targets, rows, b = outputs["mlm_targets"], outputs["mlm_rows"], outputs["batch_size"]
        tok_loss = nn.functional.cross_entropy(logits, targets, reduction="none")
        correct = (logits.argmax(-1) == targets).float()
        out = torch.zeros(b, 4, device=logits.device)
        out[:, 0].index_add_(0, rows, tok_loss)
        out[:, 1].index_add_(0, rows, torch.ones_like(tok_loss))
        out[:, 2].index_add_(0, rows, correct)
        out[:, 3] = float("nan")
        if outputs["pair_logits"] is not None:
            out[:, 3] = outputs["pair_logits"].argmax(-1).float()  # compared with gold in metrics()
        return out

    def gold(self, encoded: Encoded) -> np.ndarray:
        return np.asarray([f.get("pair_label", -1) for f in encoded.features])

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        s = np.asarray(scores, dtype=np.float64)
        n = max(s[:, 1].sum(), 1.0)
        loss = s[:, 0].sum() / n
        m = {"mlm_loss": float(loss), "perplexity": float(math.exp(min(loss, 50.0))),
             "masked_accuracy": float(s[:, 2].sum() / n), "predicted_tokens": int(s[:, 1].sum())}
        if self.pair != "none":
            m["pair_accuracy"] = float(np.mean(s[:, 3] == np.asarray(labels)))
        return m

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "mlm_probability": self.mlm_probability, "mask_fraction": self.mask_fraction,
                "random_fraction": self.random_fraction, "whole_word": self.whole_word, "pair": self.pair}
