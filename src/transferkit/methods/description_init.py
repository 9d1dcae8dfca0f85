"""Start the classifier from the label descriptions: the zero-shot classifier by embeddings
(evaluation/zeroshot.py) written into the head, so fine-tuning starts where zero-shot ends instead of from a
random layer. Row c of the classifier is e_c / (|e_c| s T), e_c the mean-pooled embedding of label c's
description (task.label_descriptions, default the label name) by the model's own encoder, s the mean length of
the e_c, T the zero-shot temperature; the bias is zero. A text's logit for c is then cos(x, e_c) |x| / (s T):
the zero-shot classifier's ranking of the labels for every text, at a temperature scaled by |x| / s. With few labels this keeps what the
pretrained embedding space knows about the labels' meaning (the head starts at the zero-shot accuracy).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import MODEL, Method, MethodConfig

log = logging.getLogger(__name__)


class DescriptionInitConfig(MethodConfig):
    method: ClassVar[str] = "description_init"
    summary: ClassVar[str] = "start the classifier from the label descriptions' embeddings (the zero-shot head)"
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)
    conflicts: ClassVar[tuple[str, ...]] = ("prompt_tuning",)

    temperature: float = Field(0.05, gt=0.0, description="T: the logits are about cosine / T (the zero-shot "
                               "baseline's softmax temperature).")

    def cross_checks(self, run: Any) -> list[str]:
        if run.task.type == "text_classification" and (run.task.pooling != "mean" or run.task.head != "linear"
                                                       or run.task.multilabel):
            return ["methods -> description_init: needs task.pooling: mean and task.head: linear, single-label "
                    "(the head reads the mean-pooled embedding the descriptions are compared in)"]
        return []


class DescriptionInit(Method):
    Config = DescriptionInitConfig
    order = MODEL

    def __init__(self, cfg: DescriptionInitConfig) -> None:
        super().__init__(cfg)
        self.run: Any = None
        self.done: dict[str, Any] = {}

    def bind(self, run: Any) -> None:
        self.run = run

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        import numpy as np
        import torch

        from transferkit.errors import ConfigError
        from transferkit.evaluation.zeroshot import embed
        from transferkit.modeling import load as mload

        cfg: DescriptionInitConfig = self.cfg  # type: ignore[assignment]
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        if not hasattr(inner, "classifier") or not hasattr(inner, "bert"):
            raise ConfigError([f"methods -> description_init: needs the mean-pooling classifier, got "
                               f"{type(inner).__name__}"])
        tok = mload.load_tokenizer(mload.resolve(self.run.model.path))
        descriptions = self.run.task.label_descriptions or {}
        texts = [descriptions.get(y, y) for y in task.labels]
        e = embed(inner.bert, tok, texts, self.run.model.max_length).astype(np.float64)
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        weight = e / (norms * norms.mean() * cfg.temperature)
        with torch.no_grad():
            inner.classifier.weight.copy_(torch.as_tensor(weight, dtype=inner.classifier.weight.dtype))
            inner.classifier.bias.zero_()
        inner.bert.train(model.training)
        self.done = {"descriptions": dict(zip(task.labels, texts))}
        log.info("description_init: classifier rows from the embeddings of %s", texts)
        return model

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.done}
