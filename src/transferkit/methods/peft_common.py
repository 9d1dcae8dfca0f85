"""What every PEFT method shares (peft does the layers; this file only wires them to the run): the task head
is always trained in full and saved with the adapter (peft's `modules_to_save`); the trainable fraction is
logged; at save time the run folder gets `adapter/` (PeftModel.from_pretrained loads it on the base
checkpoint) and, for methods whose update folds into the weights (LoRA, AdaLoRA, IA3), a merged `model/`
that transformers loads with no peft installed, checked against the adapter model's outputs. Methods that
add inputs rather than weights (prompt tuning) cannot be merged: their `model/` holds the head config,
tokenizer and task but no weights, so a plain `transformers.pipeline` fails loudly instead of predicting
without the prompt; `transferkit predict` loads base + adapter."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

from transferkit.methods.base import MODEL, Method

log = logging.getLogger(__name__)

ADAPTER = "adapter"
#: written into model/ when the model cannot be merged: predict loads the adapter named here
UNMERGED = "adapter.json"
TOLERANCE = 1e-5
#: methods that wrap the model with peft (at most one per run: peft stacks one adapter type)
PEFT_METHODS = ("lora", "adalora", "ia3", "prompt_tuning", "prefix_tuning")


def head_modules(model: Any) -> list[str]:
    """The task head: top-level children other than the encoder that hold parameters (classifier, qa_outputs...)."""
    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children()
            if name != prefix and any(True for _ in child.parameters())]


def is_mlm_wrapper(model: Any) -> bool:
    """The pretraining task's wrapper (tasks/mlm.py): an nn.Module holding the transformers MLM as `lm`."""
    return hasattr(model, "lm") and not hasattr(model, "base_model_prefix")


def mlm_head_modules(lm: Any) -> list[str]:
    """In MLM pretraining the head's transform (dense + LayerNorm) trains in full; its decoder is tied to the
    word embeddings (vocabulary x hidden), which would make the adapter as large as the model."""
    names = {n for n, _ in lm.named_modules()}
    return [n for n in ("cls.predictions.transform",) if n in names]


def new_token_ids(model: Any) -> list[int]:
    """Rows of the input embedding that the base checkpoint does not have (tokens a task added, e.g. the
    relation markers): they start from an initialisation, not from pretraining, so the adapters train them."""
    from transformers import AutoConfig

    ref = getattr(model.config, "_name_or_path", "")
    try:
        base = AutoConfig.from_pretrained(ref).vocab_size if ref else None
    except (OSError, ValueError):
        return []
    rows = model.get_input_embeddings().num_embeddings
    return list(range(base, rows)) if base and rows > base else []


def peft_model_of(model: Any) -> Any:
    """The PeftModel inside what the loop holds (DDP wrapper, MLM wrapper)."""
    model = getattr(model, "module", model)
    return model.lm if is_mlm_wrapper(model) else model


def encoder_linear_names(model: Any) -> list[str]:
    from torch import nn

    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and (name.startswith(prefix + ".") or not prefix)]


def check_targets(method: str, model: Any, targets: list[str], field: str = "target_modules") -> None:
    from transferkit.errors import ConfigError

    linear = encoder_linear_names(model)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in linear})
        raise ConfigError([f"methods -> {method} -> {field}: no Linear layer of the encoder is named "
                           f"{missing}; the encoder's Linear layers end in: {', '.join(suffixes)}"])


class PeftMethod(Method):
    """Subclasses build the peft config (`peft_config`) and say whether the result can be merged."""

    order = MODEL
    mergeable: ClassVar[bool] = True
    #: embedding rows the base checkpoint lacks (set when the model is wrapped)
    _new_tokens: list[int] = []

    def peft_config(self, model: Any, task: Any, head: list[str]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_model(self, model: Any, *, task: Any) -> Any:
        if is_mlm_wrapper(model):  # MLM pretraining: adapt the language model inside the task's wrapper
            model.lm = self._wrap(model.lm, task, mlm_head_modules(model.lm))
            return model
        return self._wrap(model, task, head_modules(model))

    def _wrap(self, model: Any, task: Any, head: list[str]) -> Any:
        from peft import get_peft_model

        from transferkit.errors import ConfigError

        self._new_tokens = new_token_ids(model)
        try:
            wrapped = get_peft_model(model, self.peft_config(model, task, head))
        except (ValueError, KeyError) as e:  # e.g. no default target modules for this architecture
            raise ConfigError([f"methods -> {self.name}: peft cannot wrap this model: {e}"]) from None
        trainable, total = wrapped.get_nb_trainable_parameters()
        log.info("%s: %s of %s parameters trainable (%.2f%%), trained in full: %s", self.name,
                 f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1), ", ".join(head) or "nothing")
        return wrapped

    def export(self, model: Any, *, run_dir: Any, forward: Any) -> Any:
        import torch

        from transferkit.errors import TransferkitError

        out = Path(run_dir) / ADAPTER
        # adapter weights + the head (modules_to_save) + adapter_config.json; with tokens added to the vocabulary
        # (relation markers) also the resized embedding matrix, so that base + adapter rebuilds the same model
        model.save_pretrained(out, save_embedding_layers=bool(self._new_tokens))
        if not self.mergeable:
            log.info("%s: adapter saved to %s (not mergeable: model/ holds no weights; predict loads the adapter)",
                     self.name, out)
            return model
        model.eval()
        with torch.no_grad():
            before = forward(model)
            merged = model.merge_and_unload()
            after = forward(merged)
        pairs = list(zip(_tensors(before), _tensors(after)))
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in pairs)
        scale = max(1.0, max(float(a.float().abs().max()) for a, _ in pairs))
        if diff > TOLERANCE * scale:  # 1e-5, relative once the outputs exceed 1 in size (fp32 rounding)
            raise TransferkitError(f"{self.name}: the merged model's outputs differ from the adapter model's by "
                                   f"{diff:.2e} (more than {TOLERANCE:g}); the adapter is saved in {out}, the merged "
                                   "model is not.")
        log.info("%s: adapter saved to %s; merged model agrees within %.1e", self.name, out, diff)
        (out / "merge_check.json").write_text(json.dumps({"max_abs_difference": diff, "tolerance": TOLERANCE * scale}))
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
