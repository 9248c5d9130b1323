"""Which float types training computes in, on this device: the autocast dtype of the forward and
backward passes (`pretrain.precision`) and of Muon's Newton-Schulz steps (`pretrain.muon_precision`).

`auto` takes bf16 wherever the hardware multiplies bf16 natively (any CUDA GPU with it, a CPU
with AVX512-BF16 or AMX) and fp32 elsewhere: a CPU without those emulates bf16, 3x slower than
fp32. On this project's AVX512-BF16 CPU, bf16 autocast ran the small model's forward and
backward 1.8x faster than fp32 at the same validation bits per byte (docs/benchmarks.md)."""

from __future__ import annotations

import contextlib

import torch

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # None: no autocast
NS_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively here: a CUDA GPU that has bf16, or a CPU with AVX512-BF16
    or AMX (torch's own CPU feature probes)."""
    if device.type == "cuda":  # not counting emulation: a V100 would run bf16 slower than fp16
        return torch.cuda.is_bf16_supported(including_emulation=False)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private: a torch without them means no
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def autocast_precision(device: torch.device, setting: str = "auto") -> str:
    """`pretrain.precision` on this device: auto is bf16 where it is native, fp16 (with a loss
    scaler) on a GPU without bf16, fp32 on a CPU without it."""
    if setting != "auto":
        return setting
    if fast_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"


def muon_precision(device: torch.device, setting: str = "auto") -> str:
    """`pretrain.muon_precision` on this device: auto is bf16 where it is native, else fp32."""
    if setting != "auto":
        return setting
    return "bf16" if fast_bf16(device) else "fp32"


def newton_schulz_dtype(device: torch.device, setting: str = "auto") -> torch.dtype:
    """The dtype Muon's Newton-Schulz steps compute in, at `muon_precision(device, setting)`."""
    return NS_DTYPES[muon_precision(device, setting)]


def autocast_to(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's context at `precision` (a resolved one): autocast to bf16 or fp16, or
    none for fp32. Weights stay fp32; the optimizer steps in fp32."""
    dtype = AUTOCAST_DTYPES[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
