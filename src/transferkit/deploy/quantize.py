"""int8 dynamic quantization for CPU inference.

The Linear layers of the encoder get int8 weights (per-tensor) and int8 activations quantized on the fly
per batch; embeddings, LayerNorm and the task head stay fp32 (the head is tiny and sits where rounding
costs the most). CPU only: the kernels are x86 (fbgemm/oneDNN) and ARM (qnnpack).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from transferkit.errors import ModelError

HEAD_NAMES = ("classifier", "qa_outputs", "cls")


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy-free, in-place int8 dynamic quantization of `model`'s encoder Linear layers (eval mode)."""
    if next(model.parameters()).device.type != "cpu":
        raise ModelError("int8 quantization runs on CPU; load the model with device='cpu'.")
    from torch.ao.quantization import quantize_dynamic

    targets = {name for name, mod in model.named_modules()
               if isinstance(mod, nn.Linear) and name.split(".")[0] not in HEAD_NAMES}
    if not targets:
        raise ModelError("int8: the model has no Linear layers outside its head to quantize.")
    model.eval()
    with warnings.catch_warnings():
        # torch deprecates the quantized-tensor API in favour of torchao; the kernels still ship and work.
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, targets, dtype=torch.qint8, inplace=True)


def count_quantized(model: nn.Module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    return sum(isinstance(m, QLinear) for m in model.modules())


class _Quiet(logging.Filter):
    """onnxruntime's quantizer logs a pre-processing hint and one INFO line per tensor on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return "pre-processing before quantization" not in msg and not msg.startswith("Quantization parameters for")


def quantize_onnx_int8(src: Path, dst: Path) -> Path:
    """int8 ONNX model: ONNX Runtime dynamic quantization of the encoder's weight MatMuls (the Linear layers),
    per output channel with 7-bit weight range (`reduce_range`), activations quantized on the fly. Left in fp32:
    embeddings (Gather), the task head, and the attention-score MatMuls (activation x activation: quantizing
    them cost speed and gained nothing). Chosen on the main job's validation split (docs/deploy.md): all MatMuls
    -0.63 pt at 750 texts/s; weight MatMuls + reduce_range -0.08 pt at 780-840 texts/s (fp32: 480)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    keep_fp32 = [n.name for n in graph.node if any(f"/{h}/" in n.name for h in HEAD_NAMES)
                 or (n.op_type == "MatMul" and not any(x in weights for x in n.input))]
    root = logging.getLogger()
    quiet = _Quiet()
    root.addFilter(quiet)
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True,
                         weight_type=QuantType.QInt8, nodes_to_exclude=keep_fp32)
    finally:
        root.removeFilter(quiet)
    return dst
