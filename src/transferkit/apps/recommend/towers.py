"""Two towers fine-tuned from a pretrained encoder, through the toolkit's one training loop (`fit`).

A user's history text and an item's text are each encoded by the same pretrained encoder (shared weights: a
Siamese pair of towers), mean-pooled and L2-normalised; a batch of (user, item read next) pairs is trained with
in-batch negatives (InfoNCE: every other item of the batch is a negative of a user), the loss of dense retrieval
(Karpukhin et al. 2020). A user has several next reads, so a batch may hold several pairs of one user: the other
items of the same user are positives too, and are left out of each other's negatives (masked), not pushed away. The task object below is all the loop needs to know; validation reports the loss (early
stopping watches it) and the mean cosine of the true pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from transferkit.tasks.base import Encoded

TEMPERATURE = 0.05


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask


class TwoTowerTask:
    name = "two_tower"
    primary_metric = "loss"
    baselines: tuple[str, ...] = ()

    def __init__(self, pad_token_id: int, temperature: float = TEMPERATURE) -> None:
        self.pad = pad_token_id
        self.temperature = temperature

    def encode_pairs(self, tokenizer: Any, users: list[str], items: list[str], user_max: int, item_max: int) -> Encoded:
        """One feature per pair; pairs with the same user text share a group (each other's positives)."""
        q = tokenizer(users, truncation=True, max_length=user_max)["input_ids"]
        d = tokenizer(items, truncation=True, max_length=item_max)["input_ids"]
        groups: dict[str, int] = {}
        g = [groups.setdefault(u, len(groups)) for u in users]
        return Encoded([{"q": a, "d": b, "g": k} for a, b, k in zip(q, d, g)],
                       [len(a) + len(b) for a, b in zip(q, d)])

    def collate(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        q, qm = _pad([f["q"] for f in features], self.pad)
        d, dm = _pad([f["d"] for f in features], self.pad)
        groups = torch.tensor([f.get("g", i) for i, f in enumerate(features)])
        return {"q_ids": q, "q_mask": qm, "d_ids": d, "d_mask": dm, "groups": groups,
                "labels": torch.arange(len(features))}

    @staticmethod
    def embed(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    def forward(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(model, batch["q_ids"], batch["q_mask"]), self.embed(model, batch["d_ids"], batch["d_mask"])

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        q, d = outputs
        logits = q @ d.T / self.temperature
        groups = batch.get("groups")
        if groups is not None:  # another item of the same user is not a negative
            same = groups[:, None] == groups[None, :]
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(len(q), device=q.device))

    def scores(self, outputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, d = outputs
        return (q * d).sum(-1)

    def gold(self, encoded: Encoded) -> None:
        return None

    def metrics(self, scores: Any, labels: Any) -> dict[str, Any]:
        return {"pair_cosine": float(np.mean(scores)) if len(scores) else 0.0}


def embed_texts(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Normalised mean-pooled embeddings, in input order (batches of similar length)."""
    from transferkit.evaluation.evaluate import eval_batches

    model.eval()
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    with torch.inference_mode():
        for idx in eval_batches([len(x) for x in ids], batch_size):
            x, m = _pad([ids[i] for i in idx], pad)
            out[idx] = TwoTowerTask.embed(model, x, m).float().numpy()
    return out


def train_towers(ref: str, tokenizer: Any, train: tuple[list[str], list[str]], val: tuple[list[str], list[str]],
                 cfg: Any, out: Path, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Fine-tune the shared tower encoder on (user text, item text) pairs; save it (a transformers folder with its
    tokenizer) to `out`. Returns the model and the fit result's summary."""
    from transformers import AutoModel, set_seed

    from transferkit.training.loop import fit

    set_seed(cfg.train.seed)
    model = AutoModel.from_pretrained(ref)
    task = TwoTowerTask(tokenizer.pad_token_id or 0)
    um, im = cfg.encoder.user_max_length, cfg.encoder.max_length
    tr = task.encode_pairs(tokenizer, *train, um, im)
    va = task.encode_pairs(tokenizer, *val, um, im)
    out.mkdir(parents=True, exist_ok=True)
    # the loop needs only collate, forward, loss, scores, metrics, gold and primary_metric of a Task
    res = fit(task, model, tr, va, cfg.train, cfg.early_stopping, out, progress=progress, label="two towers",  # type: ignore[arg-type]
              tensorboard=False, checkpoints=False)
    model.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    summary = {"steps": res.steps, "best_validation_loss": res.best_metric, "best_step": res.best_step,
               "train_seconds": round(res.train_seconds, 1), "stopped_early": res.stopped_early}
    return model, summary
