"""Load a model folder (or a run folder holding model/) and predict, reusing the Task's encode/decode:
the same code path as evaluation, so there is no train/serve skew."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from transferkit.data.sources import Examples
from transferkit.errors import ModelError
from transferkit.evaluation.evaluate import Runnable, infer, predictions
from transferkit.methods.peft_common import ADAPTER, UNMERGED

def model_dir_of(path: str | Path) -> Path:
    """The folder with task.json (and the tokenizer) of a run folder, model folder, adapter or export."""
    p = Path(path)
    if (p / "adapter_config.json").is_file() and (p.parent / "model" / "task.json").is_file():
        return p.parent / "model"  # a run's adapter/: the task, tokenizer and head config are in model/
    for cand in (p, p / "model"):
        if (cand / "task.json").is_file():
            return cand
    if (p / "model").is_dir() or (p / "config.json").is_file():
        where = p / "model" if (p / "model").is_dir() else p
        raise ModelError(f"'{where}' has no task.json: it was not written by transferkit, or the run did not finish "
                         "(a run folder gets model/task.json when training ends; resume it with --resume).")
    raise ModelError(f"'{p}' is neither a run folder (with model/) nor a model folder with task.json.")


def save_model(model: torch.nn.Module, tokenizer: Any, task: Any, out: Path) -> Path:
    """A model folder: weights + config (or, for a peft model that could not be merged, the config and a
    pointer to the run's adapter/ instead of weights), tokenizer, task.json."""
    out.mkdir(parents=True, exist_ok=True)
    bind = getattr(task, "bind_model", None)
    if bind is not None:  # what the task keeps of the model (a CRF's transition scores) is this model's
        bind(model)
    if hasattr(model, "peft_config"):
        model.get_base_model().config.save_pretrained(out)  # type: ignore[operator]
        (out / UNMERGED).write_text(json.dumps({
            "adapter": f"../{ADAPTER}", "why": "this method's update cannot be merged into the weights; load the base "
            "checkpoint with the adapter (transferkit predict does)"}, indent=2))
    else:
        model.save_pretrained(out, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(out)
    save_files = getattr(task, "save_files", None)
    if save_files is not None:  # what else the task needs beside the model (seq2seq: the target tokenizer)
        save_files(out)
    (out / "task.json").write_text(json.dumps(task.describe(), indent=2, ensure_ascii=False), encoding="utf-8")
    return out


def load_task(desc: dict[str, Any]):
    from transferkit.tasks import TASKS, task_class

    if desc.get("task") not in TASKS:
        raise ModelError(f"task.json names an unknown task '{desc.get('task')}'; known: {', '.join(TASKS)}")
    return task_class(desc["task"]).from_description(desc)


def _with_adapter(head_cls: Any, model_dir: Path, adapter: Path) -> torch.nn.Module:
    """The base checkpoint the adapter was trained on, with the run's head config, plus the adapter (peft)."""
    from transformers import AutoConfig

    try:
        from peft import PeftConfig, PeftModel
    except ImportError:
        merged = "" if (model_dir / UNMERGED).is_file() else f"; '{model_dir}' holds the same model merged, which does not"
        raise ModelError(f"'{adapter}' is a peft adapter: loading it needs peft (pip install peft){merged}.") from None
    base_ref = PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path
    config = AutoConfig.from_pretrained(model_dir)
    # what may differ from the base checkpoint (the head, a vocabulary the task extended) is in the adapter
    base = head_cls.from_pretrained(base_ref, config=config, ignore_mismatched_sizes=True, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter).eval()


def _read_task(d: Path) -> Any:
    try:
        desc = json.loads((d / "task.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{d / 'task.json'} cannot be read (damaged?): {e}") from None
    return load_task(desc)


class Predictor:
    """Predictions from a run folder, a model folder or an export folder (`transferkit export`: ONNX
    Runtime), through the task's own encode / decode."""

    def __init__(self, model: Runnable, tokenizer: Any, task: Any, device: str = "cpu") -> None:
        self.model = model.to(device).eval() if isinstance(model, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.task = task
        self.device = device

    @property
    def backend(self) -> str:
        """'onnx' (an export folder), 'onnx-int8', or 'torch'."""
        from transferkit.deploy.onnx import INT8_FILE, OnnxModel

        if isinstance(self.model, OnnxModel):
            return "onnx-int8" if self.model.path.name == INT8_FILE else "onnx"
        return "torch"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None, int8: bool = False) -> Predictor:
        """`int8=True`: for an export folder, its int8 ONNX model (written by `export --int8` when it passed
        the accuracy gate); otherwise dynamic int8 quantization of the encoder's Linear layers in torch
        (CPU only; faster, a small accuracy cost that bench/infer_bench.py measures)."""
        from transformers import AutoConfig, AutoTokenizer

        from transferkit.deploy.onnx import ONNX_FILE

        if (Path(path) / ONNX_FILE).is_file():
            return cls._load_export(Path(path), device, int8)
        d = model_dir_of(path)
        task = _read_task(d)
        config = AutoConfig.from_pretrained(d)
        head_cls = task.model_class(config)  # the task knows the class of its folder
        from transferkit.modeling.heads import PRUNED

        arch = (getattr(config, "architectures", None) or [""])[0]
        head_cls = PRUNED.get(arch, head_cls)  # a pruned model: its class rebuilds the pruned shapes
        adapter = Path(path) if (Path(path) / "adapter_config.json").is_file() else None
        if adapter is None and (d / UNMERGED).is_file():
            adapter = (d / json.loads((d / UNMERGED).read_text())["adapter"]).resolve()
            if not (adapter / "adapter_config.json").is_file():
                raise ModelError(f"'{d}' holds no weights: its model is the adapter in '{adapter}', which is missing "
                                 "(copy the whole run folder, adapter/ included).")
        from transferkit.modeling.load import check_tokenizer_files

        check_tokenizer_files(str(d))
        try:
            model = head_cls.from_pretrained(d) if adapter is None else _with_adapter(head_cls, d, adapter)
            tokenizer = AutoTokenizer.from_pretrained(d)
            load_files = getattr(task, "load_files", None)
            if load_files is not None:
                load_files(d, tokenizer)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - OSError, SafetensorError, ValueError...: all mean a damaged folder
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"model folder '{d}' cannot be loaded (damaged or incomplete?): {reason}") from None
        device = device or ("cpu" if int8 or not torch.cuda.is_available() else "cuda")
        if int8:
            if device != "cpu":
                raise ModelError(f"int8 inference runs on CPU, not on '{device}'.")
            from transferkit.deploy.quantize import quantize_int8

            model = quantize_int8(model)
        return cls(model, tokenizer, task, device)

    @classmethod
    def _load_export(cls, d: Path, device: str | None, int8: bool) -> Predictor:
        from transformers import AutoTokenizer

        from transferkit.deploy.onnx import INT8_FILE, ONNX_FILE, OnnxModel

        if device not in (None, "cpu"):
            raise ModelError(f"'{d}' is an ONNX export: it runs on CPU (ONNX Runtime), not on '{device}'.")
        file = d / (INT8_FILE if int8 else ONNX_FILE)
        if not file.is_file():
            raise ModelError(f"'{d}' has no int8 model ({INT8_FILE}): export it with `transferkit export RUN --int8` "
                             "(it is not written when int8 loses more than --max-drop on validation).")
        task = _read_task(d)
        try:
            tokenizer = AutoTokenizer.from_pretrained(d)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"export folder '{d}': its tokenizer cannot be loaded ({e}).") from None
        return cls(OnnxModel(file), tokenizer, task, "cpu")

    def examples(self, inputs: list[Any], pairs: list[str] | None = None) -> Examples:
        """Raw inputs -> Examples: texts (+ pairs) for classification; the task's own forms otherwise
        (text or words for NER, {question, context} for QA, {text, head, tail} for relations)."""
        make = getattr(self.task, "examples_for_prediction", None)
        if make is not None:
            return make(list(inputs), pairs)
        texts = [str(t) for t in inputs]
        return Examples(texts=texts, labels=[None] * len(texts), origin=[""] * len(texts), text_pairs=pairs)

    def predict_scores(self, inputs: list[Any], pairs: list[str] | None = None, batch_size: int = 64):
        """Per-example scores (class probabilities; per-word tag probabilities for NER; ...)."""
        return self._run(inputs, pairs, batch_size)[0]

    def _run(self, inputs: list[Any], pairs: list[str] | None, batch_size: int):
        encoded = self.task.encode(self.tokenizer, self.examples(inputs, pairs))
        scores, _ = infer(self.task, self.model, encoded, device=self.device, batch_size=batch_size)
        return predictions(self.task, encoded, scores), encoded

    def predict(self, inputs: list[Any], pairs: list[str] | None = None, batch_size: int = 64) -> list[dict[str, Any]]:
        if not inputs:
            return []
        preds, encoded = self._run(inputs, pairs, batch_size)
        return self.task.decode(preds, encoded)
