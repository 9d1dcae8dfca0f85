"""Class-incremental updates: a head that grows. A task model saved with labels [a, b] is loaded with labels
[a, b, c]: every head tensor whose first dimension counts the labels gets the checkpoint's rows for the labels
it had (matched by name, so their order may change) and fresh rows for the new ones; the new rows' indices
are recorded on the model (methods.anchor leaves them free). A tensor that counts labels in more than its
first dimension (a CRF's transition matrix) cannot grow this way and is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferkit.errors import ModelError

#: model attribute set when a head grew: parameter name -> the new labels' row indices
GROWN_ROWS = "transferkit_grown_rows"
NEVER = -1.0e4  # the bias of a silenced row: the label is never predicted


def checkpoint_labels(ref: str) -> list[str] | None:
    """The label names of a local task checkpoint (None for a hub name or a model without a head)."""
    import json

    path = Path(ref) / "config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text(encoding="utf-8"))
    archs = cfg.get("architectures") or []
    if not any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in archs):
        return None
    id2label = cfg.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def grows(ref: str, labels: list[str] | None) -> list[str] | None:
    """The checkpoint's labels when loading it with `labels` means growing its head (they are a proper subset)."""
    old = checkpoint_labels(ref)
    if old is None or labels is None or set(old) == set(labels) or not set(old) < set(labels):
        return None
    return old


def load_grown(cls: Any, ref: str, config: Any, old: list[str]) -> Any:
    """`cls.from_pretrained` with a grown head: the old labels' rows copied from the checkpoint."""
    import torch
    from safetensors import safe_open

    model, info = cls.from_pretrained(ref, config=config, dtype=torch.float32, ignore_mismatched_sizes=True,
                                      output_loading_info=True)
    new = [config.id2label[i] for i in range(config.num_labels)]
    rows_old = [old.index(label) for label in new if label in old]
    rows_new = [i for i, label in enumerate(new) if label in old]
    fresh = [i for i, label in enumerate(new) if label not in old]
    weights = Path(ref) / "model.safetensors"
    grown: dict[str, list[int]] = {}
    params = dict(model.named_parameters())
    with safe_open(str(weights), framework="pt") as f:
        for key, ckpt_shape, model_shape in info.get("mismatched_keys", ()):
            ok = (len(ckpt_shape) == len(model_shape) and ckpt_shape[0] == len(old) and model_shape[0] == len(new)
                  and tuple(ckpt_shape[1:]) == tuple(model_shape[1:]))
            if not ok or key not in params:
                raise ModelError(
                    f"cannot grow '{key}' of {ref} from {len(old)} to {len(new)} labels (shape {tuple(ckpt_shape)} -> "
                    f"{tuple(model_shape)}): only heads whose first dimension counts the labels grow (not a CRF). "
                    "Train a new run on the old and the new data instead.")
            saved = f.get_tensor(key).float()
            with torch.no_grad():
                params[key][rows_new] = saved[rows_old].to(params[key].device)
            grown[key] = fresh
    setattr(model, GROWN_ROWS, grown)
    return model


def silence_new_rows(model: Any) -> Any:
    """Make a grown model predict exactly what its checkpoint did: the new labels' rows get zero weights and a
    very negative bias (the parent's scores "before" an update, in the update's label space)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, rows in (getattr(model, GROWN_ROWS, {}) or {}).items():
            params[key][rows] = NEVER if key.endswith("bias") else 0.0
    return model
