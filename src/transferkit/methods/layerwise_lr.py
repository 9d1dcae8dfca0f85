"""Layer-wise learning-rate decay (Howard & Ruder 2018; Sun et al. 2019): the top encoder layer trains at
the configured learning rate, each layer below at `decay` times the one above, the embeddings at
decay^L; the task head (and pooler) at `head_lr_scale` times the learning rate."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.base import OPTIM, Method, MethodConfig

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


class LayerwiseLRConfig(MethodConfig):
    method: ClassVar[str] = "layerwise_lr"
    summary: ClassVar[str] = "layer-wise learning-rate decay from the top layer down, and a head learning rate"

    decay: float = Field(0.9, gt=0.0, le=1.0, description="Learning-rate factor from one encoder layer to the one "
                         "below it (1.0: no decay).")
    head_lr_scale: float = Field(1.0, gt=0.0, le=1000.0, description="The head's (and pooler's) learning rate as "
                                 "a multiple of train.optimizer.lr.")


def depth_of(name: str, n_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder layer i, n_layers + 1 for everything above (pooler, head)."""
    if "embeddings" in name:
        return 0
    m = _LAYER.search(name)
    return int(m.group(1)) + 1 if m else n_layers + 1


class LayerwiseLR(Method):
    Config = LayerwiseLRConfig
    order = OPTIM

    def param_groups(self, model: Any, groups: list[dict[str, Any]], *, lr: float) -> list[dict[str, Any]]:
        cfg: LayerwiseLRConfig = self.cfg  # type: ignore[assignment]
        config = getattr(getattr(model, "lm", model), "config", None)  # the pretraining task wraps the LM
        n_layers = int(getattr(config, "num_hidden_layers", 0))
        names = {id(p): n for n, p in model.named_parameters()}
        out: list[dict[str, Any]] = []
        for group in groups:
            by_depth: dict[int, list[Any]] = {}
            for p in group["params"]:
                by_depth.setdefault(depth_of(names[id(p)], n_layers), []).append(p)
            for depth, params in sorted(by_depth.items()):
                scale = cfg.head_lr_scale if depth > n_layers else cfg.decay ** (n_layers - depth)
                out.append({**group, "params": params, "lr": lr * scale, "depth": depth})
        return out
