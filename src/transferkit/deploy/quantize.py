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


class _NoHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_onnx_int8(src: Path, dst: Path) -> Path:
    """int8 ONNX model: ONNX Runtime dynamic quantization of the encoder's MatMul weights, per output channel
    (per-tensor scales lose far more on real MiniLM weights), activations quantized on the fly; embeddings
    (Gather) and the task head stay fp32, as in `quantize_int8`."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    head = [n.name for n in graph.node if any(f"/{h}/" in n.name for h in HEAD_NAMES)]
    root = logging.getLogger()  # onnxruntime logs a "consider pre-processing" hint on the root logger
    hint = _NoHint()
    root.addFilter(hint)
    try:
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=head)
    finally:
        root.removeFilter(hint)
    return dst
