"""Freeze policies: which parameters train. Works on any transformers encoder with `.embeddings`
and `.encoder.layer` (BERT family)."""

from __future__ import annotations

import logging

from torch import nn

from transferkit.errors import ConfigError

log = logging.getLogger(__name__)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def _layers(base: nn.Module) -> nn.ModuleList:
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise ConfigError([f"freeze -> mode: cannot find encoder layers in {type(base).__name__}; "
                           "use mode 'none', 'embeddings' or 'all_but_head'"])
    return layers


def apply_freeze(model: nn.Module, mode: str, layers: int = 0) -> tuple[int, int]:
    """Set requires_grad by policy; returns (trainable, total) and logs them."""
    base: nn.Module = model.base_model  # type: ignore[assignment]
    for p in model.parameters():
        p.requires_grad = True
    if mode == "embeddings":
        base.embeddings.requires_grad_(False)
    elif mode == "bottom":
        stack = _layers(base)
        if layers > len(stack):
            raise ConfigError([f"freeze -> layers: {layers} exceeds the model's {len(stack)} layers"])
        base.embeddings.requires_grad_(False)
        for layer in stack[:layers]:
            layer.requires_grad_(False)
    elif mode == "all_but_head":
        base.requires_grad_(False)
    trainable, total = count_params(model)
    log.info("trainable parameters: %s of %s (%.1f%%), freeze=%s", f"{trainable:,}", f"{total:,}",
             100.0 * trainable / max(total, 1), mode)
    return trainable, total
