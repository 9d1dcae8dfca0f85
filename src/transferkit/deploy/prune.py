"""Structured pruning of a BERT-family encoder: attention heads and FFN neurons, by importance.

Importance is first-order (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate of 1 on
every head's output and on every FFN neuron, and the mean |d loss / d gate| over training batches; head scores
are normalised per layer (L2), as in the paper, before the global ranking. Pruning removes the rows and columns
of the least important heads (at least one head stays in each layer) and neurons, so the model is smaller and
faster, not masked.

transformers 5 dropped `prune_heads` and the config's `pruned_heads`, so the pruned shapes are recorded in the
config (`transferkit_pruning`: heads and FFN width per layer) and rebuilt by the `Pruned*` classes of
modeling/heads.py, which the model folder carries (`trust_remote_code=True` loads it in plain transformers).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from transferkit.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class Importance:
    heads: torch.Tensor  # (layers, heads), normalised per layer
    ffn: list[torch.Tensor]  # per layer: (neurons,)


def _encoder(model: nn.Module) -> Any:
    base = getattr(model, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None or not hasattr(layers[0], "attention") or not hasattr(layers[0].attention, "self"):
        raise ModelError(f"pruning supports BERT-family encoders (encoder.layer[i].attention.self); "
                         f"{type(model).__name__} is not one.")
    return base


def head_size(model: Any) -> int:
    c = model.config
    return int(c.hidden_size // c.num_attention_heads)


def importance(task: Any, model: Any, encoded: Any, *, batch_size: int = 32, max_examples: int = 1024,
               progress: bool = False) -> Importance:
    """Head and neuron importance of `model` on (the first `max_examples` of) a labelled encoded split."""
    from transferkit.evaluation.evaluate import eval_batches

    enc = _encoder(model)
    layers = enc.encoder.layer
    d = head_size(model)
    head_gates = [torch.ones(len_heads(layer, d), requires_grad=True) for layer in layers]
    ffn_gates = [torch.ones(layer.intermediate.dense.out_features, requires_grad=True) for layer in layers]
    hooks = []
    for i, layer in enumerate(layers):
        def gate_heads(_m: nn.Module, _inp: Any, out: Any, i: int = i) -> Any:
            x = out[0]
            g = head_gates[i].to(x.dtype).repeat_interleave(d)
            return (x * g, *out[1:])

        def gate_ffn(_m: nn.Module, _inp: Any, out: torch.Tensor, i: int = i) -> torch.Tensor:
            return out * ffn_gates[i].to(out.dtype)

        hooks.append(layer.attention.self.register_forward_hook(gate_heads))
        hooks.append(layer.intermediate.register_forward_hook(gate_ffn))
    was_training = model.training
    model.eval()  # no dropout: the gradient of the model as it predicts
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    n = min(len(encoded), max_examples)
    seen = 0
    try:
        for idx in eval_batches(encoded.lengths[:n], batch_size):
            batch = task.collate([encoded.features[i] for i in idx])
            loss = task.loss(task.forward(model, batch), batch)
            loss.backward()
            seen += len(idx)
    finally:
        for h in hooks:
            h.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    heads = torch.stack([g.grad.abs() / max(seen, 1) if g.grad is not None else torch.zeros_like(g)
                         for g in head_gates]) if head_gates and len({len(g) for g in head_gates}) == 1 else None
    if heads is None:  # layers with different head counts (already pruned): pad with +inf (never chosen)
        width = max(len(g) for g in head_gates)
        heads = torch.full((len(head_gates), width), float("inf"))
        for i, g in enumerate(head_gates):
            heads[i, :len(g)] = g.grad.abs() / max(seen, 1) if g.grad is not None else 0
    finite = torch.where(torch.isfinite(heads), heads, torch.zeros_like(heads))
    norm = finite.norm(dim=1, keepdim=True).clamp(min=1e-12)
    heads = torch.where(torch.isfinite(heads), heads / norm, heads)
    ffn = [g.grad.abs() / max(seen, 1) if g.grad is not None else torch.zeros_like(g) for g in ffn_gates]
    return Importance(heads.detach(), [f.detach() for f in ffn])


def len_heads(layer: Any, d: int) -> int:
    return int(layer.attention.self.query.out_features // d)


def choose_heads(imp: Importance, fraction: float) -> dict[int, list[int]]:
    """The least important `fraction` of all heads, at most all but one per layer: {layer: [head indices]}."""
    scores = imp.heads
    alive = torch.isfinite(scores)
    total = int(alive.sum())
    k = int(round(fraction * total))
    order = sorted(((float(scores[i, j]), i, j) for i in range(scores.shape[0]) for j in range(scores.shape[1])
                    if alive[i, j]))
    remove: dict[int, list[int]] = {}
    left = {i: int(alive[i].sum()) for i in range(scores.shape[0])}
    for _, i, j in order:
        if k <= 0:
            break
        if left[i] > 1:
            remove.setdefault(i, []).append(j)
            left[i] -= 1
            k -= 1
    return {i: sorted(v) for i, v in remove.items()}


def _keep_index(n: int, drop: list[int], width: int = 1) -> Any:
    keep = [h for h in range(n) if h not in set(drop)]
    return torch.tensor([h * width + t for h in keep for t in range(width)], dtype=torch.long)


def prune(model: Any, imp: Importance, *, heads: float = 0.0, ffn: float = 0.0) -> dict[str, Any]:
    """Remove the least important `heads` fraction of attention heads and `ffn` fraction of FFN neurons (in
    every layer), in place. Returns what was removed; the model's class and config are set so that it saves
    and loads as a pruned model."""
    from transformers.pytorch_utils import prune_linear_layer

    if not 0 <= heads < 1 or not 0 <= ffn < 1:
        raise ModelError(f"pruning fractions must be in [0, 1): heads={heads}, ffn={ffn}")
    enc = _encoder(model)
    d = head_size(model)
    layers = enc.encoder.layer
    removed = choose_heads(imp, heads) if heads > 0 else {}
    neurons_removed: dict[int, int] = {}
    with torch.no_grad():
        for i, layer in enumerate(layers):
            sa, out = layer.attention.self, layer.attention.output
            drop = removed.get(i, [])
            if drop:
                idx = _keep_index(len_heads(layer, d), drop, d)
                sa.query = prune_linear_layer(sa.query, idx, dim=0)
                sa.key = prune_linear_layer(sa.key, idx, dim=0)
                sa.value = prune_linear_layer(sa.value, idx, dim=0)
                out.dense = prune_linear_layer(out.dense, idx, dim=1)
                sa.num_attention_heads = len(idx) // d
                sa.all_head_size = len(idx)
            if ffn > 0:
                width = layer.intermediate.dense.out_features
                keep_n = max(1, int(round(width * (1 - ffn))))
                keep: Any = torch.sort(torch.topk(imp.ffn[i], keep_n).indices).values
                layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
                layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
                neurons_removed[i] = width - keep_n
    spec = {"heads": [len_heads(layer, d) for layer in layers],
            "ffn": [layer.intermediate.dense.out_features for layer in layers]}
    mark_pruned(model, spec)
    return {"heads_removed": {str(k): v for k, v in removed.items()}, "neurons_removed": neurons_removed, **spec}


def mark_pruned(model: Any, spec: dict[str, list[int]]) -> None:
    """Record the pruned shapes in the config and give the model the Pruned* class that rebuilds them."""
    from transferkit.modeling import heads as h

    model.config.transferkit_pruning = spec
    cls: Any = h.pruned_class(type(model))
    model.__class__ = cls
    cls.register_for_auto_class(h.AUTO_CLASS[cls.__name__])
    model.config.architectures = [cls.__name__]


def count_heads(model: Any) -> int:
    d = head_size(model)
    return sum(len_heads(layer, d) for layer in _encoder(model).encoder.layer)
