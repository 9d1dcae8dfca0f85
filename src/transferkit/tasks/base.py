"""The Task protocol: everything the one training loop, the evaluator and the predictor need to know
about a task, and nothing else. A task is a small object, not a trainer subclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from transferkit.data.sources import Examples


@dataclass
class Encoded:
    """A tokenized split: one feature dict per example (lists of ints), and its length in tokens."""

    features: list[dict[str, Any]]
    lengths: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)


class Task(Protocol):
    name: str
    #: validation metric the loop reports and early stopping may watch; larger is better unless "loss"
    primary_metric: str
    #: the baselines of the transfer report this task can run: "majority", "linear_probe"
    baselines: tuple[str, ...]

    def model_class(self, config: Any = None) -> Any:
        """The transformers class that loads this task's saved model folder (`config`: the folder's config)."""

    def fit_labels(self, train: Examples) -> None:
        """Learn what the task needs from training data (label set); check nothing else."""

    def check(self, split: Examples) -> None:
        """Raise DataError naming the record when a split cannot be used (e.g. unknown labels)."""

    def encode(self, tokenizer: Any, split: Examples) -> Encoded: ...

    def build_model(self, ref: str, *, init: str, size: str | None, dropout: float | None,
                    tokenizer: Any) -> nn.Module: ...

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad a list of features into a batch of tensors; must include 'labels' when present."""

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model outputs relevant to the task (e.g. logits)."""

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Per-example scores (probabilities) from outputs, for metrics and prediction."""

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        """Metrics from stacked scores and gold labels. Scalars at top level; tables nested."""

    def gold(self, encoded: Encoded) -> Any:
        """Gold labels of an encoded split, in the layout `metrics` expects."""

    def decode(self, scores: Any, encoded: Encoded | None = None) -> list[dict[str, Any]]:
        """Human-readable predictions (`encoded` gives access to the inputs, e.g. for character offsets)."""

    # Optional members, for tasks whose examples are not one text and one label:
    #   token_level: bool -- scores are per token (infer trims them to each feature's length)
    #   read(ref, data_cfg) -> {split: Examples} -- the task's own data reader (CoNLL, SQuAD, ...)
    #   postprocess(scores, encoded) -> per-example predictions (merge sliding windows, decode spans)
    #   examples_for_prediction(inputs, pairs) -> Examples from raw inputs (predict / serve)

    def describe(self) -> dict[str, Any]:
        """What goes into task.json so that predict/serve rebuild the task without the config."""


def pad_inputs(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """input_ids (padded with pad_token_id), attention_mask and, when the features have them,
    token_type_ids, as (batch, longest feature) tensors: the collate step every task shares."""
    n, width = len(features), max(len(f["input_ids"]) for f in features)
    ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    types = torch.zeros((n, width), dtype=torch.long) if "token_type_ids" in features[0] else None
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        ids[i, :k] = torch.tensor(f["input_ids"])
        mask[i, :k] = 1
        if types is not None:
            types[i, :k] = torch.tensor(f["token_type_ids"])
    batch = {"input_ids": ids, "attention_mask": mask}
    if types is not None:
        batch["token_type_ids"] = types
    return batch


def pad_labels(features: list[dict[str, Any]], width: int, ignore: int = -100) -> torch.Tensor:
    """Each feature's 'labels' list as a row of a (batch, width) tensor, `ignore` after its end."""
    labels = torch.full((len(features), width), ignore, dtype=torch.long)
    for i, f in enumerate(features):
        labels[i, :len(f["labels"])] = torch.tensor(f["labels"])
    return labels
