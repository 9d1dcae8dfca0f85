"""Precision choice and the CUDA attention-kernel setting (checked without a GPU by stubbing it)."""

from __future__ import annotations

import torch

from transferkit.training import loop


def test_mixed_precision_on_cuda_disables_cudnn_attention(monkeypatch):
    captured = {}

    class FakeAccelerator:
        def __init__(self, **kw):
            captured.update(kw)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr("accelerate.Accelerator", FakeAccelerator)
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        loop.make_accelerator("fp32")
        assert captured == {"cpu": False, "mixed_precision": "no"}
        assert torch.backends.cuda.cudnn_sdp_enabled()  # fp32 leaves it alone
        loop.make_accelerator("auto")
        assert captured == {"cpu": False, "mixed_precision": "bf16"}
        # measured 8x slower bf16 training with cuDNN attention on varying shapes (bench/results/gpu_check.md)
        assert not torch.backends.cuda.cudnn_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


def test_auto_precision_is_fp32_on_cpu():
    assert loop.resolve_precision("auto", "cpu") == "no"
    assert loop.resolve_precision("bf16", "cpu") == "bf16"
