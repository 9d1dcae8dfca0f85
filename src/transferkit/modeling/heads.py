"""Heads that transformers has no class for (mean-pooled classification, entity-marker relations).

This file is copied into saved model folders (transformers does it through `register_for_auto_class`), so
that `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` and
`pipeline("text-classification", model=folder, trust_remote_code=True)` load it without transferkit
installed. It must therefore import only torch and transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class BertMeanPoolingForSequenceClassification(BertPreTrainedModel):
    """BERT encoder -> mean of the token states (padding masked) -> dropout -> linear.

    Sentence encoders such as all-MiniLM-L6-v2 were trained with mean pooling, so their [CLS] state and
    pooler carry little; this head reads what they were trained to produce. Parameter names match
    BertForSequenceClassification (`bert.*`, `classifier.*`), so BERT checkpoints load into it.
    """

    def __init__(self, config):
        super().__init__(config)
        _encoder_and_head(self, config, config.hidden_size)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = out.last_hidden_state
        pooled = hidden.mean(dim=1) if attention_mask is None else mean_pool(hidden, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _encoder_and_head(model: nn.Module, config, width: int) -> None:
    """A BERT encoder without pooler, the classifier dropout and a linear layer from `width` features."""
    model.num_labels = config.num_labels
    model.bert = BertModel(config, add_pooling_layer=False)
    drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    model.dropout = nn.Dropout(drop)
    model.classifier = nn.Linear(width, config.num_labels)
    model.post_init()  # type: ignore[operator]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class BertForRelationClassification(BertPreTrainedModel):
    """BERT encoder -> the states of the head and tail start markers, concatenated -> dropout -> linear.

    The marker token ids are in the config (`head_marker_ids`, `tail_marker_ids`: every typed and plain
    start marker of each role), so the model finds the positions itself from `input_ids` and a saved folder
    works with `AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)` on
    marked text. When a marker is missing (a window cut it off), position 0 ([CLS]) is read instead.
    """

    def __init__(self, config):
        super().__init__(config)
        _encoder_and_head(self, config, 2 * config.hidden_size)

    def marker_positions(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def first(ids: list[int]) -> torch.Tensor:
            # isin by comparison: the same result, and it exports to ONNX (aten::isin has no ONNX op)
            hit = (input_ids.unsqueeze(-1) == torch.tensor(ids, device=input_ids.device)).any(dim=-1)
            # argmax of a 0/1 row is its first 1; rows with no marker give 0 ([CLS])
            return hit.int().argmax(dim=1)

        return first(self.config.head_marker_ids), first(self.config.tail_marker_ids)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        hidden = out.last_hidden_state
        h, t = self.marker_positions(input_ids)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = torch.cat([hidden[rows, h], hidden[rows, t]], dim=-1)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------- pruned models (deploy/prune.py)
# transformers 5 has no `prune_heads`: a pruned model records its shapes in config.transferkit_pruning
# ({"heads": [per layer], "ffn": [per layer]}) and these classes rebuild them before the weights load.


def apply_pruned_shapes(model, config) -> None:
    spec = getattr(config, "transferkit_pruning", None)
    if not spec:
        return
    d = config.hidden_size // config.num_attention_heads
    hidden = config.hidden_size
    for layer, heads, ffn in zip(model.base_model.encoder.layer, spec["heads"], spec["ffn"]):
        sa = layer.attention.self
        sa.num_attention_heads, sa.all_head_size = heads, heads * d
        sa.query, sa.key, sa.value = (nn.Linear(hidden, heads * d) for _ in range(3))
        layer.attention.output.dense = nn.Linear(heads * d, hidden)
        layer.intermediate.dense = nn.Linear(hidden, ffn)
        layer.output.dense = nn.Linear(ffn, hidden)


def _pruned(base: type) -> type:
    def __init__(self, config):
        base.__init__(self, config)
        apply_pruned_shapes(self, config)

    return type(f"Pruned{base.__name__}", (base,), {"__init__": __init__, "__module__": __name__,
                                                   "__doc__": f"{base.__name__} with pruned heads / FFN neurons."})


from transformers import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification  # noqa: E402

PrunedBertForSequenceClassification = _pruned(BertForSequenceClassification)
PrunedBertForTokenClassification = _pruned(BertForTokenClassification)
PrunedBertForQuestionAnswering = _pruned(BertForQuestionAnswering)
PrunedBertMeanPoolingForSequenceClassification = _pruned(BertMeanPoolingForSequenceClassification)
PrunedBertForRelationClassification = _pruned(BertForRelationClassification)
PRUNED = {c.__name__: c for c in (PrunedBertForSequenceClassification, PrunedBertForTokenClassification,
                                  PrunedBertForQuestionAnswering, PrunedBertMeanPoolingForSequenceClassification,
                                  PrunedBertForRelationClassification)}
AUTO_CLASS = {"PrunedBertForSequenceClassification": "AutoModelForSequenceClassification",
              "PrunedBertForTokenClassification": "AutoModelForTokenClassification",
              "PrunedBertForQuestionAnswering": "AutoModelForQuestionAnswering",
              "PrunedBertMeanPoolingForSequenceClassification": "AutoModelForSequenceClassification",
              "PrunedBertForRelationClassification": "AutoModelForSequenceClassification"}


def pruned_class(cls: type) -> type:
    if cls.__name__ in PRUNED:
        return cls
    name = f"Pruned{cls.__name__}"
    if name not in PRUNED:
        raise ValueError(f"no pruned variant of {cls.__name__}; prunable: "
                         f"{', '.join(n[len('Pruned'):] for n in PRUNED)}")
    return PRUNED[name]
