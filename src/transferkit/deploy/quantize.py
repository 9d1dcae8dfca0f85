"""int8 dynamic quantization for CPU inference.

The Linear layers of the encoder get int8 weights (per-tensor) and int8 activations quantized on the fly
per batch; embeddings, LayerNorm and the task head stay fp32 (the head is tiny and sits where rounding
costs the most). CPU only: the kernels are x86 (fbgemm/oneDNN) and ARM (qnnpack).
"""

from __future__ import annotations

import warnings

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
