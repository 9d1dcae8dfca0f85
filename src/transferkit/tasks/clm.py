"""Causal language modelling as a pretraining Task (`objective.kind: causal`): next-token prediction on the
packed token stream, through the same fit() loop, evaluation and checkpointing as masked LM.

The model is a BERT built or loaded as a decoder (`is_decoder`, `BertLMHeadModel`), so that what is pretrained
here warm-starts both the `causal_lm` task and the decoder of a `seq2seq` encoder-decoder. The corpus is packed
with [CLS] and [SEP] as for masked LM, so the tokenizer must have them (GPT-2 style checkpoints are refused
with that reason; the `causal_lm` task itself takes them as they are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.tasks.base import Encoded, pad_inputs


def next_token(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at every position but the last, in float32; the labels they predict: the next token's)."""
    return logits[:, :-1].float(), labels[:, 1:]


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    x, y = next_token(logits, labels)
    return nn.functional.cross_entropy(x.reshape(-1, x.shape[-1]), y.reshape(-1), ignore_index=-100)


class CausalLMWrapper(nn.Module):
    """`lm` is what gets saved (the same attribute as the masked-LM wrapper's)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits


@dataclass
class CausalPretrainTask:
    pad_id: int
    name: str = "causal_lm_pretraining"
    baselines: tuple[str, ...] = ()
    primary_metric: str = "lm_loss"

    def encoded(self, features: list[dict[str, Any]]) -> Encoded:
        feats = [{"input_ids": f["input_ids"]} for f in features]
        return Encoded(features=feats, lengths=[len(f["input_ids"]) for f in feats])

    def fix_masks(self, encoded: Encoded, seed: int) -> Encoded:
        return encoded  # nothing random about next-token targets

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_inputs(features, self.pad_id)
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch

    def wrap(self, lm: nn.Module) -> CausalLMWrapper:
        return CausalLMWrapper(lm)

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]),
                "labels": batch["labels"]}

    def loss(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return next_token_loss(outputs["logits"], outputs["labels"])

    def scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per sequence: [summed next-token loss, predicted tokens, correct tokens]."""
        logits, labels = next_token(outputs["logits"], outputs["labels"])
        tok = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        counted = labels != -100
        correct = (logits.argmax(-1) == labels) & counted
        return torch.stack([tok.sum(1), counted.sum(1).float(), correct.sum(1).float()], dim=1)

    def gold(self, encoded: Encoded) -> np.ndarray:
        return np.full(len(encoded), -1)

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        s = np.asarray(scores, dtype=np.float64)
        n = max(s[:, 1].sum(), 1.0)
        loss = s[:, 0].sum() / n
        return {"lm_loss": float(loss), "perplexity": float(math.exp(min(loss, 50.0))),
                "next_token_accuracy": float(s[:, 2].sum() / n), "predicted_tokens": int(s[:, 1].sum())}

    def describe(self) -> dict[str, Any]:
        return {"task": self.name}
