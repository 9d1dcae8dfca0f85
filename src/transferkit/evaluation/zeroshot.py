"""Zero-shot classification: what the pretrained model gives with no training label at all.

- By embeddings: each text and each label's description (task.label_descriptions, default the label name) is
  embedded like a sentence encoder does (mean of the token states), and the text gets the label whose
  description is the most similar by cosine. The packaged MiniLM was trained for exactly this similarity.
- By cloze prompt (task.head: prompt): the masked LM fills the pattern's mask and the verbalizer words'
  probabilities are the class probabilities, raw and with contextual calibration (Zhao et al. 2021): the
  probabilities the model gives to content-free inputs ("N/A", "", the mask token) measure its bias toward
  some label words; each text's probabilities are divided by them (W = diag(p_cf)^-1, b = 0) and a softmax
  makes them a distribution again.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from transferkit.data.sources import Examples
from transferkit.evaluation.evaluate import eval_batches
from transferkit.modeling.heads import mean_pool

log = logging.getLogger(__name__)

#: cosine similarities are turned into probabilities by softmax(cos / T); only the ranking matters for accuracy
TEMPERATURE = 0.05


@torch.inference_mode()
def embed(encoder: torch.nn.Module, tokenizer: Any, texts: list[str], max_length: int,
          batch_size: int = 64) -> np.ndarray:
    """Mean-pooled last hidden states of plain texts (no pattern), in input order, float32."""
    encoder.eval()
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    out = np.zeros((len(texts), int(getattr(encoder, "config").hidden_size)), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    for idx in eval_batches([len(x) for x in ids], batch_size):
        width = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            mask[r, :len(ids[i])] = 1
        hidden = encoder(input_ids=x, attention_mask=mask).last_hidden_state
        out[idx] = mean_pool(hidden, mask).float().numpy()
    return out


def cosine_scores(texts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(texts, labels) cosine similarities."""
    a = texts / np.clip(np.linalg.norm(texts, axis=1, keepdims=True), 1e-12, None)
    b = labels / np.clip(np.linalg.norm(labels, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def contextual_calibration(probs: np.ndarray, content_free: np.ndarray) -> np.ndarray:
    """softmax(W p) with W = diag(p_cf)^-1 (Zhao et al. 2021, b = 0): `probs` (n, labels) label-word
    probabilities, `content_free` (labels,) their mean over the content-free inputs."""
    p_cf = np.asarray(content_free, dtype=np.float64)
    p_cf = p_cf / p_cf.sum()
    return softmax(np.asarray(probs, dtype=np.float64) / p_cf)


def embedding_zero_shot(encoder: torch.nn.Module, tokenizer: Any, texts: list[str], labels: list[str],
                        descriptions: dict[str, str] | None, max_length: int) -> np.ndarray:
    """(texts, labels) probabilities of zero-shot classification by description similarity."""
    desc = [(descriptions or {}).get(y, y) for y in labels]
    sims = cosine_scores(embed(encoder, tokenizer, texts, max_length), embed(encoder, tokenizer, desc, max_length))
    return softmax(sims / TEMPERATURE)


def cloze_probabilities(task: Any, model: torch.nn.Module, tokenizer: Any, texts: list[str],
                        batch_size: int = 64) -> np.ndarray:
    """(texts, labels) verbalizer-word probabilities (renormalised over the label words) of a prompt task's model."""
    from transferkit.evaluation.evaluate import infer

    ex = Examples(texts=list(texts), labels=[None] * len(texts), origin=[f"text {i}" for i in range(len(texts))])
    enc = task.encode(tokenizer, ex)
    scores, _ = infer(task, model, enc, batch_size=batch_size)
    return np.asarray(scores, dtype=np.float64)


def zero_shot_baselines(task: Any, model: torch.nn.Module, encoder: torch.nn.Module, tokenizer: Any,
                        test: Examples, gold: Any, cfg: Any) -> dict[str, dict[str, Any]]:
    """The zero-shot rows of the transfer table, computed before any training: by embeddings always, by cloze
    prompt (raw, and calibrated when task.prompt.calibrate) when the task's head is the masked LM's."""
    out: dict[str, dict[str, Any]] = {}
    log.info("zero-shot by label-description embeddings...")
    probs = embedding_zero_shot(encoder, tokenizer, test.texts, list(task.labels), cfg.task.label_descriptions,
                                cfg.model.max_length)
    out["zero_shot_embedding"] = task.metrics(probs, gold)
    if getattr(task, "verbalizer", None):
        log.info("zero-shot by cloze prompt...")
        p = cloze_probabilities(task, model, tokenizer, test.texts)
        out["zero_shot_cloze"] = task.metrics(p, gold)
        if cfg.task.prompt.calibrate:
            free = [tokenizer.mask_token if t == "[MASK]" else t for t in cfg.task.prompt.content_free]
            p_cf = cloze_probabilities(task, model, tokenizer, free).mean(axis=0)
            out["zero_shot_cloze_calibrated"] = {**task.metrics(contextual_calibration(p, p_cf), gold),
                                                 "content_free_probabilities": dict(zip(task.labels, p_cf.tolist()))}
    return out
