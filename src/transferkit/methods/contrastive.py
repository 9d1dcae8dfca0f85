"""Contrastive few-shot fine-tuning, SetFit's recipe (Tunstall et al. 2022) as a method of the one loop.

1. Data: each epoch is a list of pairs of training examples, `pairs` per example, half with an example of the
   same label and half with one of another label (SetFit's pair sampling), drawn as a pure function of
   (seed, epoch); a micro-batch holds whole pairs, [a1, b1, a2, b2, ...], and the loop never splits a pair
   between chunks (`batch_multiple = 2`).
2. Step: the encoder's mean-pooled embeddings of a pair are pulled to cosine 1 (same label) or 0 (different)
   by a squared error, SetFit's CosineSimilarityLoss. The classifier layer trains alongside on the detached
   embeddings (so validation during training means something and the encoder is shaped by the pairs only).
3. Head: after training (best checkpoint restored) a logistic regression on the training examples' embeddings
   replaces the classifier layer, SetFit's default head, written into the same Linear so the saved model is a
   plain mean-pooling classifier that `predict`, `serve` and `pipeline` load.

Needs `task.pooling: mean` (the head must read the embeddings the pairs trained), single-label classification,
one process.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import DATA, Method, MethodConfig, StepContext

log = logging.getLogger(__name__)


class ContrastiveConfig(MethodConfig):
    method: ClassVar[str] = "contrastive"
    summary: ClassVar[str] = ("SetFit-style: the encoder learns from pairs (same label -> cosine 1, other -> 0), then "
                              "a logistic-regression head on its embeddings")
    tasks: ClassVar[tuple[str, ...]] = ("text_classification",)
    # both decide what an epoch's batches are; the adversarial passes perturb a loss this method replaces
    conflicts: ClassVar[tuple[str, ...]] = ("balanced_sampler", "fgm", "pgd", "freelb", "prompt_tuning")

    pairs: int = Field(20, ge=2, description="Pairs per training example and epoch, half with an example of the "
                       "same label and half with one of another label (SetFit's num_iterations is half of it).")
    head: Literal["logistic", "trained"] = Field(
        "logistic", description="'logistic': after training, a logistic regression fitted on the training "
        "embeddings becomes the classifier (SetFit's head); 'trained': keep the layer trained alongside.")
    head_weight: float = Field(1.0, ge=0.0, description="Weight of the cross-entropy of the classifier layer "
                               "trained alongside on the detached embeddings.")

    def cross_checks(self, run: Any) -> list[str]:
        out = []
        if run.task.type == "text_classification":
            if run.task.pooling != "mean":
                out.append("methods -> contrastive: needs task.pooling: mean (the pairs train mean-pooled "
                           "embeddings and the head must read the same ones)")
            if run.task.multilabel or run.task.head != "linear":
                out.append("methods -> contrastive: for single-label classification with task.head: linear")
        if run.train.batch_size % 2 or run.train.batch_size // max(run.train.grad_accum, 1) < 2:
            out.append(f"methods -> contrastive: a micro-batch holds whole pairs, so train.batch_size (now "
                       f"{run.train.batch_size}) must be even and at least 2 per accumulation step")
        return out


def pair_batches(labels: list[int], pairs: int, batch_pairs: int, *, seed: int, epoch: int) -> list[list[int]]:
    """Micro-batches [a1, b1, a2, b2, ...] of pairs: for every example `pairs // 2` partners of its label and as
    many of other labels (an example alone in its class is its own positive partner), shuffled."""
    import numpy as np

    rng = np.random.default_rng([seed, epoch, 2022])
    y = np.asarray(labels)
    by = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    out: list[tuple[int, int]] = []
    for i, c in enumerate(y.tolist()):
        same = by[c][by[c] != i]
        same = same if len(same) else np.array([i])
        other = np.flatnonzero(y != c)
        if not len(other):
            raise ValueError("contrastive pairs need at least two labels in the training split")
        for _ in range(pairs // 2):
            out.append((i, int(rng.choice(same))))
            out.append((i, int(rng.choice(other))))
    order = rng.permutation(len(out))
    flat = [out[j] for j in order.tolist()]
    return [[k for p in flat[s:s + batch_pairs] for k in p] for s in range(0, len(flat), batch_pairs)]


class Contrastive(Method):
    Config = ContrastiveConfig
    order = DATA
    #: the loop keeps consecutive pairs together when it cuts a batch into chunks
    batch_multiple: ClassVar[int] = 2

    def __init__(self, cfg: ContrastiveConfig) -> None:
        super().__init__(cfg)
        self.seed = 0
        self.fitted: dict[str, Any] = {}

    def bind(self, run: Any) -> None:
        self.seed = int(run.train.seed) if run is not None else 0

    def epoch_batches(self, batches: list[list[int]], *, epoch: int, seed: int, train: Any) -> list[list[int]]:
        cfg: ContrastiveConfig = self.cfg  # type: ignore[assignment]
        size = max((len(b) for b in batches), default=2)
        labels = [int(f["labels"]) for f in train.features]
        return pair_batches(labels, cfg.pairs, max(1, size // 2), seed=seed, epoch=epoch)

    def on_train_start(self, *, model: Any, total_steps: int, steps_per_epoch: int) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from transferkit.errors import ConfigError

            raise ConfigError(["methods -> contrastive: runs in one process (DDP would split its pairs)"])

    @staticmethod
    def _head(model: Any) -> Any:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        inner = getattr(inner, "module", inner)
        if not (hasattr(inner, "dropout") and hasattr(inner, "classifier")):
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> contrastive: needs the mean-pooling classifier (task.pooling: mean), "
                               f"got {type(inner).__name__}"])
        return inner

    def train_step(self, ctx: StepContext, inner: Any) -> Any:
        import torch
        import torch.nn.functional as F

        cfg: ContrastiveConfig = self.cfg  # type: ignore[assignment]
        m = self._head(ctx.model)
        seen: dict[str, Any] = {}
        hook = m.dropout.register_forward_hook(lambda mod, args, out: seen.__setitem__("pooled", args[0]))
        try:
            ctx.model(**{k: v for k, v in ctx.batch.items() if k != "labels"})
        finally:
            hook.remove()
        pooled = seen["pooled"].float()
        y = ctx.batch["labels"]
        a, b = pooled[0::2], pooled[1::2]
        n = min(len(a), len(b))
        target = (y[0::2][:n] == y[1::2][:n]).float()
        pair_loss = F.mse_loss(F.cosine_similarity(a[:n], b[:n]), target)
        logits = m.classifier(m.dropout(pooled.detach()))
        loss = (pair_loss + cfg.head_weight * F.cross_entropy(logits, y)) * ctx.scale
        ctx.backward(loss)
        return torch.as_tensor(loss.detach())

    def after_training(self, *, model: Any, task: Any, val: Any, infer: Any, train: Any = None) -> None:
        cfg: ContrastiveConfig = self.cfg  # type: ignore[assignment]
        if cfg.head != "logistic" or train is None:
            return
        import numpy as np
        import torch
        from sklearn.linear_model import LogisticRegression

        from transferkit.evaluation.compare import encoder_features

        m = self._head(model)
        x = encoder_features(m.base_model, task, train)
        y = np.asarray(task.gold(train))
        clf = LogisticRegression(max_iter=2000, random_state=self.seed).fit(x, y)
        weight, bias = fitted_head(clf.coef_, clf.intercept_, clf.classes_, len(task.labels))
        with torch.no_grad():
            m.classifier.weight.copy_(torch.as_tensor(weight, dtype=m.classifier.weight.dtype))
            m.classifier.bias.copy_(torch.as_tensor(bias, dtype=m.classifier.bias.dtype))
        self.fitted = {"head": "logistic regression", "train_accuracy": float(clf.score(x, y))}
        log.info("contrastive: logistic-regression head on %d training embeddings (train accuracy %.4f)", len(y),
                 self.fitted["train_accuracy"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.fitted}


def fitted_head(coef: Any, intercept: Any, classes: Any, n_labels: int) -> tuple[Any, Any]:
    """A logistic regression as the (n_labels, d) weight and bias of a softmax layer with the same
    probabilities: binary (one coefficient row w) -> rows -w/2 and +w/2; classes absent from the training
    examples get a bias far below the others."""
    import numpy as np

    coef, intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
    if coef.shape[0] == 1:  # binary: sigmoid(w.x + b) == softmax([-z/2, z/2])[1]
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((n_labels, coef.shape[1]))
    bias = np.full(n_labels, -1e4)
    for row, c in enumerate(np.asarray(classes).tolist()):
        weight[int(c)], bias[int(c)] = coef[row], intercept[row]
    return weight, bias
