"""Load a model folder (or a run folder holding model/) and predict, reusing the Task's encode/decode:
the same code path as evaluation, so there is no train/serve skew."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from transferkit.data.sources import Examples
from transferkit.errors import ModelError
from transferkit.evaluation.evaluate import infer

MEAN_HEAD = "BertMeanPoolingForSequenceClassification"


def model_dir_of(path: str | Path) -> Path:
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "task.json").is_file():
            return cand
    raise ModelError(f"'{p}' is neither a run folder (with model/) nor a model folder with task.json.")


def save_model(model: torch.nn.Module, tokenizer: Any, task: Any, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "task.json").write_text(json.dumps(task.describe(), indent=2, ensure_ascii=False), encoding="utf-8")
    return out


def load_task(desc: dict[str, Any]):
    if desc["task"] == "text_classification":
        from transferkit.tasks.classification import ClassificationTask

        return ClassificationTask.from_description(desc)
    raise ModelError(f"task.json names an unknown task '{desc['task']}'")


class Predictor:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, task: Any, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.task = task
        self.device = device

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, int8: bool = False) -> Predictor:
        """`int8=True`: dynamic int8 quantization of the encoder's Linear layers (CPU only; faster, a
        small accuracy cost that bench/infer_bench.py measures)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        d = model_dir_of(path)
        task = load_task(json.loads((d / "task.json").read_text(encoding="utf-8")))
        config = AutoConfig.from_pretrained(d)
        if MEAN_HEAD in (config.architectures or []):
            from transferkit.modeling.heads import BertMeanPoolingForSequenceClassification as head_cls
        else:
            head_cls = AutoModelForSequenceClassification
        model = head_cls.from_pretrained(d)
        device = device or ("cpu" if int8 or not torch.cuda.is_available() else "cuda")
        if int8:
            if device != "cpu":
                raise ModelError(f"int8 inference runs on CPU, not on '{device}'.")
            from transferkit.deploy.quantize import quantize_int8

            model = quantize_int8(model)
        return cls(model, AutoTokenizer.from_pretrained(d), task, device)

    def predict_scores(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64):
        ex = Examples(texts=list(texts), labels=[None] * len(texts), origin=[""] * len(texts), text_pairs=pairs)
        encoded = self.task.encode(self.tokenizer, ex)
        scores, _ = infer(self.task, self.model, encoded, device=self.device, batch_size=batch_size)
        return scores

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 64) -> list[dict[str, Any]]:
        if not texts:
            return []
        return self.task.decode(self.predict_scores(texts, pairs, batch_size))
