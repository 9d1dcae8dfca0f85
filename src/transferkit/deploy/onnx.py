"""ONNX export of a task model and an ONNX Runtime session that stands in for it.

The exported graph is the task's own forward (`task.forward(model, batch)`: logits for classification and
relations, per-token logits for NER, start/end logits for QA), so prediction from the export reuses the
task's encode/decode unchanged. Batch and sequence axes are dynamic. The legacy TorchScript exporter
(opset 17) traces BERT-family models exactly; it is traced on a batch that holds padding, so that the
attention-mask path is in the graph.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.errors import ModelError

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: the tensors a model reads; everything else a task's batch carries is a label or bookkeeping
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17


class _TaskGraph(nn.Module):
    """task.forward over positional tensors, so that the exporter sees named inputs."""

    def __init__(self, task: Any, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.task, self.model, self.names = task, model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.task.forward(self.model, dict(zip(self.names, tensors)))


def traced_sample(task: Any, features: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Model inputs for tracing: a few features of different lengths, with at least one padded position
    (a trace on an all-ones mask may leave the mask out of the graph)."""
    chosen = sorted(features[:64], key=lambda f: len(f["input_ids"]))
    chosen = [chosen[0], chosen[-1]] if len(chosen) > 1 else chosen
    batch = {k: v for k, v in task.collate(chosen).items() if k in MODEL_INPUTS}
    if bool(batch["attention_mask"].all()):
        n = batch["input_ids"].shape[0]
        pad = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        batch = {k: torch.cat([v, torch.full((n, 1), pad[k], dtype=v.dtype)], dim=1) for k, v in batch.items()}
    return batch


def export_onnx(task: Any, model: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> Path:
    """Write `model` (as the task runs it) to `path`; dynamic batch axis, and sequence axis where the
    output has one (token-level tasks, QA)."""
    names = [k for k in MODEL_INPUTS if k in sample]
    graph = _TaskGraph(task, model, names).eval()  # eval: dropout off in the trace
    with torch.inference_mode(False), torch.no_grad():
        out = graph(*(sample[k] for k in names))
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"ONNX export: the task '{task.name}' does not return one tensor from its forward pass.")
    dyn: dict[str, dict[int, str]] = {k: {0: "batch", 1: "sequence"} for k in names}
    dyn["outputs"] = {0: "batch", 1: "sequence"} if out.dim() >= 3 else {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the legacy exporter is deprecated in favour of the dynamo one; its trace warnings are about
        # Python-side branches on shapes that the dynamic axes cover (checked against PyTorch afterwards)
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tuple(sample[k] for k in names), str(path), input_names=names,
                          output_names=["outputs"], dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    return path


class OnnxModel:
    """An ONNX Runtime session that takes a task's collated batch and returns what task.forward would."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for damaged files
            raise ModelError(f"'{path}' cannot be loaded by ONNX Runtime (damaged?): {str(e).splitlines()[0]}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {k: batch[k].cpu().numpy().astype(np.int64, copy=False) for k in self.inputs}
        return torch.from_numpy(self.session.run(None, feed)[0])

    @property
    def size_mb(self) -> float:
        return os.path.getsize(self.path) / 2**20
