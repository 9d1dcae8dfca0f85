"""LoRA (Hu et al. 2021) through peft: low-rank adapters on the encoder's Linear layers, the task head
trained in full and saved with the adapter. The run folder gets `adapter/` (PeftModel.from_pretrained loads
it on the base checkpoint; `transferkit predict` too) and a merged `model/` that transformers loads with no
peft installed; at save time the merged model's outputs are checked against the adapter model's."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from transferkit.methods.base import MODEL, Method, MethodConfig

log = logging.getLogger(__name__)

ADAPTER = "adapter"
TOLERANCE = 1e-5


class LoRAConfig(MethodConfig):
    method: ClassVar[str] = "lora"
    summary: ClassVar[str] = "low-rank adapters (peft) on the encoder; the head is trained in full"

    r: int = Field(8, ge=1, le=1024, description="Rank of the adapters.")
    alpha: float = Field(16.0, gt=0, description="Scaling: the adapter's update is multiplied by alpha / r.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["query", "value"], description="Linear layers that get adapters, by name suffix (BERT: query, key, value, "
        "dense), or 'all-linear' for every Linear layer of the encoder.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases train.")


def head_modules(model: Any) -> list[str]:
    """The task head: top-level children other than the encoder that hold parameters (classifier, qa_outputs...)."""
    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children()
            if name != prefix and any(True for _ in child.parameters())]


def encoder_linear_names(model: Any) -> list[str]:
    from torch import nn

    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and (name.startswith(prefix + ".") or not prefix)]


class LoRA(Method):
    Config = LoRAConfig
    order = MODEL

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        from transferkit.errors import ConfigError

        cfg: LoRAConfig = self.cfg  # type: ignore[assignment]
        linear = encoder_linear_names(model)
        if cfg.target_modules == "all-linear":
            targets = linear
        else:
            targets = list(cfg.target_modules)
            missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
            if missing:
                suffixes = sorted({n.rsplit(".", 1)[-1] for n in linear})
                raise ConfigError([f"methods -> lora -> target_modules: no Linear layer of the encoder is named "
                                   f"{missing}; the encoder's Linear layers end in: {', '.join(suffixes)}"])
        alpha: Any = cfg.alpha  # peft annotates an int; a float scale works the same
        head = head_modules(model)
        peft_cfg = LoraConfig(r=cfg.r, lora_alpha=alpha, lora_dropout=cfg.dropout, target_modules=targets,
                              bias=cfg.bias, modules_to_save=head)
        wrapped = get_peft_model(model, peft_cfg)
        trainable, total = wrapped.get_nb_trainable_parameters()
        log.info("LoRA r=%d: %s of %s parameters trainable (%.2f%%), head trained in full: %s", cfg.r,
                 f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1), ", ".join(head))
        return wrapped

    def export(self, model: Any, *, run_dir: Any, forward: Any) -> Any:
        import torch

        from transferkit.errors import TransferkitError

        out = Path(run_dir) / ADAPTER
        model.save_pretrained(out)  # adapter weights + the head (modules_to_save) + adapter_config.json
        model.eval()
        with torch.no_grad():
            before = forward(model)
            merged = model.merge_and_unload()
            after = forward(merged)
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(_tensors(before), _tensors(after)))
        if diff > TOLERANCE:
            raise TransferkitError(f"LoRA: the merged model's outputs differ from the adapter model's by {diff:.2e} "
                                   f"(more than {TOLERANCE:g}); the adapter is saved in {out}, the merged model is not.")
        log.info("LoRA: adapter saved to %s; merged model agrees within %.1e", out, diff)
        (out / "merge_check.json").write_text(json.dumps({"max_abs_difference": diff, "tolerance": TOLERANCE}))
        return merged


def _tensors(x: Any) -> list[Any]:
    import torch

    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []
