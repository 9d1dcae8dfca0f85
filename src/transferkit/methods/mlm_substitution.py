"""Contextual substitution (Kobayashi 2018; Wu et al. 2019): a share of the words of a training text are
masked and replaced by what a masked language model predicts there (sampled among its top k, never the
original). The model must have a masked-LM head: a `transferkit pretrain` run folder, or any checkpoint
with one; an encoder-only checkpoint (like the packaged MiniLM) is refused with that reason."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import Field

from transferkit.methods.augment_common import AugmentConfig, Augmenter, rng_for

log = logging.getLogger(__name__)


class MLMSubstitutionConfig(AugmentConfig):
    method: ClassVar[str] = "mlm_substitution"
    summary: ClassVar[str] = "replace masked words by a masked LM's predictions (needs a model with an MLM head)"

    model: str = Field(..., description="Masked LM: a pretrain run folder, a checkpoint folder with an MLM head, "
                       "or a hub name.")
    probability: float = Field(0.15, gt=0.0, le=0.5, description="Share of the (whole-word) tokens replaced.")
    top_k: int = Field(5, ge=1, le=100, description="Sample the replacement among the k most likely tokens.")
    batch_size: int = Field(32, ge=1, description="Texts per forward pass of the masked LM.")


def load_mlm(ref: str) -> tuple[Any, Any]:
    """The masked LM and its tokenizer; a checkpoint without a trained MLM head is a ConfigError."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from transferkit.errors import ConfigError, ModelError
    from transferkit.modeling import load as mload

    try:
        path = mload.resolve(ref)
    except ModelError as e:
        raise ConfigError([f"methods -> mlm_substitution -> model: {e}"]) from None
    import torch
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ConfigError([f"methods -> mlm_substitution -> model: '{ref}' cannot be loaded as a masked LM: "
                           f"{str(e).splitlines()[0]}"]) from None
    finally:
        transformers.logging.set_verbosity(level)
    head = [k for k in info.get("missing_keys", []) if "predictions" in k or "lm_head" in k or k.startswith("cls.")]
    if head:
        raise ConfigError([f"methods -> mlm_substitution -> model: '{ref}' has no masked-LM head (its checkpoint "
                           f"holds the encoder only; missing {head[0]}...), so its predictions would be random. Use a "
                           "model with one, e.g. the model/ of a `transferkit pretrain` run (which trains the head)"])
    return model.eval(), AutoTokenizer.from_pretrained(path)


class MLMSubstitution(Augmenter):
    Config = MLMSubstitutionConfig

    def propose(self, texts: list[str], seed: int) -> list[list[tuple[str, str]]]:
        import torch

        cfg: MLMSubstitutionConfig = self.cfg  # type: ignore[assignment]
        model, tok = load_mlm(cfg.model)
        special = set(tok.all_special_ids)
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        if not any(t.startswith("##") for t in vocab):
            from transferkit.errors import ConfigError

            raise ConfigError([f"methods -> mlm_substitution -> model: '{cfg.model}' has no WordPiece vocabulary "
                               "(no '##' continuation pieces); whole-word substitution is implemented for BERT-family "
                               "tokenizers"])
        # candidates for a replacement: whole-word pieces only, so a replacement never splits a word; rows of
        # the output beyond the tokenizer's vocabulary (padded embeddings) never
        rows = model.get_output_embeddings().weight.shape[0]
        allowed = torch.zeros(rows, dtype=torch.bool)
        allowed[:len(vocab)] = torch.tensor([not t.startswith("##") and i not in special and t.strip() != ""
                                             for i, t in enumerate(vocab)])
        jobs = []  # (example, copy, ids, masked positions)
        for i, text in enumerate(texts):
            ids = tok(text, truncation=True, max_length=tok.model_max_length if tok.model_max_length < 10**6 else 512)["input_ids"]
            words = [j for j, t in enumerate(ids) if t not in special and not vocab[t].startswith("##")
                     and (j + 1 >= len(ids) or not vocab[ids[j + 1]].startswith("##"))]
            for k in range(cfg.copies):
                rng = rng_for(seed, i, k, "mlm")
                n = max(1, round(cfg.probability * len(words))) if words else 0
                jobs.append((i, k, ids, sorted(rng.sample(words, min(n, len(words))))))
        out: list[list[tuple[str, str]]] = [[] for _ in texts]
        with torch.no_grad():
            for b in range(0, len(jobs), cfg.batch_size):
                part = jobs[b:b + cfg.batch_size]
                width = max(len(ids) for _, _, ids, _ in part)
                batch = torch.full((len(part), width), tok.pad_token_id or 0)
                mask = torch.zeros((len(part), width), dtype=torch.long)
                for r, (_, _, ids, spots) in enumerate(part):
                    row = torch.tensor(ids)
                    row[spots] = tok.mask_token_id
                    batch[r, :len(ids)] = row
                    mask[r, :len(ids)] = 1
                logits = model(input_ids=batch, attention_mask=mask).logits
                for r, (i, k, ids, spots) in enumerate(part):
                    rng = rng_for(seed, i, k, "mlm-pick")
                    new = list(ids)
                    for j in spots:
                        scores = logits[r, j].masked_fill(~allowed, float("-inf"))
                        scores[ids[j]] = float("-inf")  # never the original
                        top = torch.topk(scores, cfg.top_k)
                        probs = torch.softmax(top.values, dim=-1).tolist()
                        new[j] = int(top.indices[rng.choices(range(len(probs)), weights=probs)[0]])
                    out[i].append((tok.decode(new, skip_special_tokens=True), "substitution"))
        return out
