"""The model card every `finetune` writes as model/README.md: Hugging Face's format (YAML metadata the hub
reads: pipeline tag, base model, datasets, model-index with the test metrics) and the run's figures in prose
and tables, all taken from the run's summary (metrics.json), never typed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PIPELINE_TAG = {"text_classification": "text-classification", "relation_extraction": "text-classification",
                "token_classification": "token-classification", "question_answering": "question-answering",
                "seq2seq": "text2text-generation", "causal_lm": "text-generation"}
#: the hub aliases of the packaged checkpoints (model.path: minilm -> its hub name)
BASE_MODEL = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("loss", "total", "reply_tokens", "predicted_tokens", "temperature")
            and not k.endswith("_uncalibrated")}


def _dataset(cfg: Any) -> str:
    src = cfg.data.source or cfg.data.train or "local files"
    return Path(src).name if ("/" in src or "\\" in src) and Path(src).exists() else src


def model_card(summary: dict[str, Any], cfg: Any) -> str:
    task = summary["task"]
    metrics = _scalars(summary["test"])
    dataset = _dataset(cfg)
    base = BASE_MODEL.get(cfg.model.path, cfg.model.path)
    meta: dict[str, Any] = {
        "library_name": "transformers", "pipeline_tag": PIPELINE_TAG.get(task, "text-classification"),
        "tags": ["transferkit", task.replace("_", "-")] + [m["method"] for m in summary.get("methods", [])],
        "datasets": [dataset], "base_model": base,
        "model-index": [{"name": summary["name"], "results": [{
            "task": {"type": PIPELINE_TAG.get(task, task), "name": task.replace("_", " ")},
            "dataset": {"name": dataset, "type": dataset, "split": "test"},
            "metrics": [{"type": k, "value": v, "name": f"test {k}"} for k, v in metrics.items()]}]}],
    }
    tr, data = summary["train"], summary.get("data", {})
    sizes = data.get("sizes", {})
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {summary['name']}", "",
             f"`{base}` fine-tuned for {task.replace('_', ' ')} on {dataset} with transferkit "
             f"({tr['steps']} steps, {tr['epochs']:g} epochs; {tr['trainable_params']:,} of {tr['total_params']:,} "
             f"parameters trained).", ""]
    if summary.get("labels"):
        lines += [f"Labels: {', '.join(map(str, summary['labels']))}.", ""]
    lines += ["## Test metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    transfer = summary.get("transfer", {})
    metric = summary.get("metric")
    if len(transfer) > 1 and metric:
        names = summary.get("baseline_names", {})
        lines += ["", "## What the transfer bought", "", f"| model | test {metric} |", "|---|---|"]
        lines += [f"| {names.get(k, k.replace('_', ' '))} | {v[metric]:.4f} |" for k, v in transfer.items() if metric in v]
    if sizes:
        lines += ["", "## Data", "", ", ".join(f"{k}: {v:,}" for k, v in sizes.items()) + " examples."]
    if summary.get("methods"):
        lines += ["", "## Methods", ""] + [
            f"- {m['method']}: " + ", ".join(f"{k}={v}" for k, v in m.items() if k != "method")
            for m in summary["methods"]]
    lines += ["", "## Use", "", "```python",
              "from transferkit import Predictor", "Predictor.load('this-folder').predict([...])", "```",
              "", "or `transferkit predict this-folder`, `transferkit serve this-folder --api-keys keys.yaml`; "
              "plain transformers: `pipeline(\"" + PIPELINE_TAG.get(task, "text-classification") +
              "\", model='this-folder')` (add `trust_remote_code=True` when the folder holds heads.py).", "",
              "## Limitations", "",
              "Measured on the test split of the data above only; expect lower figures on text unlike it. The "
              "model inherits what its pretraining data hold, biases included."]
    return "\n".join(lines) + "\n"


def read_card_metrics(path: Path) -> dict[str, float]:
    """The test metrics in a card's model-index (for checks)."""
    text = Path(path).read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---", 2)[1])
    return {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
