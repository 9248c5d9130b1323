"""int8 compression for CPU inference: a 4x smaller file and int8 matrix products.

Two halves:

- storage: `int8_state` turns every Linear weight and the token embedding into symmetric int8
  with one float32 scale per output channel (per row); norms stay float32. `save_int8` writes
  it as safetensors; `load_int8` rebuilds the GPT from it.
- compute: `quantize_dynamic_int8` swaps every nn.Linear for PyTorch's dynamically quantized
  linear (int8 weights, activations quantized per batch on the fly, int8 GEMM via fbgemm/oneDNN).

The embedding and the tied lm_head are one matrix: its rows are at once embedding vectors and
the head's output channels, so one per-row int8 tensor with its scales serves both.

PyTorch 2.13 marks `torch.ao.quantization` deprecated in favour of the separate `torchao`
package (its `quantize_` API); torchao is not a dependency here and torch.ao still runs, so this
module uses torch.ao and silences its deprecation warnings at the one call site.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import INT8_WEIGHTS, read_config, save_weights

SCALE_SUFFIX = "_scale"  # "blocks.0.attn.q_proj.weight" -> "blocks.0.attn.q_proj.weight_scale"
FORMAT = {"format": "lmforge-int8", "version": "1", "scheme": "symmetric per-row int8, float32 scales"}


def _check_quantizable(model: nn.Module) -> None:
    # LoRA adapters (lm_core.finetune.lora) are lora_A/lora_B parameters beside a projection's weight
    if any(name.endswith((".lora_A", ".lora_B")) for name, _ in model.named_parameters()):
        raise ValueError("the model still has LoRA adapters: merge_lora() it before quantizing")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantization is for CPU inference: move the model to the CPU first")


def quantize_dynamic_int8(model: nn.Module, inplace: bool = False) -> nn.Module:
    """`model` (a copy unless `inplace`) with every nn.Linear computing in int8 (per-channel
    weights, activations quantized per call). The embedding and norms stay float, so
    `GPT.generate` (KV cache included) works unchanged. CPU only; inference only (no gradients)."""
    _check_quantizable(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_(tensor|channel).*deprecated")
        return quantize_dynamic(
            model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=inplace
        ).eval()


# ----------------------------------------------------------------------------- storage


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: w ~= q * scale[:, None], q in [-127, 127] (zero stays exact)."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def _quantized_names(model: GPT) -> set[str]:
    """State-dict names of the matrices stored as int8: every Linear weight and the embedding."""
    names = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return names | {"embed.weight"}


def int8_state(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights for storage: int8 matrices + `<name>_scale` float32 per-row scales,
    other tensors (norm gains) as float32. A tied lm_head is stored once, as the embedding."""
    _check_quantizable(model)
    matrices = _quantized_names(model)
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and model.cfg.tie_embeddings:
            continue
        if name in matrices:
            out[name], out[name + SCALE_SUFFIX] = quantize_rows(t.cpu())
        else:
            out[name] = t.detach().float().cpu().contiguous()
    return out


def save_int8(model: GPT, path: str | Path) -> Path:
    """Write `int8_state(model)` as safetensors; a folder gets INT8_WEIGHTS inside it."""
    path = Path(path)
    if path.is_dir():
        path = path / INT8_WEIGHTS
    save_file(int8_state(model), str(path), metadata=FORMAT)
    return path


def float_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Dequantize an int8 state back to float32 tensors under the GPT's own names."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        if t.dtype == torch.int8:
            scale = tensors.get(name + SCALE_SUFFIX)
            if scale is None:
                raise ValueError(f"int8 tensor {name} has no {name + SCALE_SUFFIX}: not an lmforge int8 state")
            out[name] = dequantize_rows(t, scale)
        else:
            out[name] = t.float()
    if not any(t.dtype == torch.int8 for t in tensors.values()):
        raise ValueError("these tensors hold no int8 weights: not an lmforge int8 state (a float checkpoint?)")
    return out


def load_int8(
    source: str | Path | dict[str, torch.Tensor], cfg: GPTConfig | None = None, dynamic: bool = True
) -> nn.Module:
    """Rebuild the GPT from an int8 state: a dict, a safetensors file, or a model folder holding
    INT8_WEIGHTS (and model_config.json when `cfg` is not given). With `dynamic`, the result is
    quantize_dynamic_int8 of it (int8 compute); without, the dequantized float model."""
    if isinstance(source, dict):
        tensors = source
    else:
        path = Path(source)
        folder = path if path.is_dir() else path.parent
        if path.is_dir():
            path = path / INT8_WEIGHTS
        if cfg is None:
            cfg = read_config(folder)
        tensors = load_file(str(path))
    if cfg is None:
        raise ValueError("load_int8 from tensors needs the model's GPTConfig")
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(float_state(tensors), strict=False)
    missing = [n for n in missing if not (n == "lm_head.weight" and cfg.tie_embeddings)]
    if missing or unexpected:
        raise ValueError(f"int8 weights do not fit the model: missing {missing}, unexpected {unexpected}")
    model.eval()
    return quantize_dynamic_int8(model, inplace=True) if dynamic else model


# ----------------------------------------------------------------------------- report


def _best_seconds(fn, repeats: int) -> float:
    """Fastest of `repeats` timed calls after one warm-up (the least disturbed by other load)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _file_bytes(write) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        write(path)
        return path.stat().st_size


@torch.inference_mode()
def compression_report(
    float_model: GPT, q_model: nn.Module, sample_idx: torch.Tensor, new_tokens: int = 16, repeats: int = 3
) -> dict[str, float]:
    """Float vs int8: bytes on disk (model.safetensors vs the int8 safetensors of the same float
    model; `q_model` is assumed built from it), forward and greedy-generate tokens/s, the next-token
    loss of each on `sample_idx` (B, T), and the relative logit error ||q - f|| / ||f||."""
    float_model.eval()
    q_model.eval()
    f_bytes = _file_bytes(lambda p: save_weights(float_model, p))
    q_bytes = _file_bytes(lambda p: save_file(int8_state(float_model), str(p), metadata=FORMAT))
    f_logits, _ = float_model(sample_idx)
    q_logits, _ = q_model(sample_idx)
    rel_err = float((q_logits.float() - f_logits.float()).norm() / f_logits.float().norm())

    def loss(logits: torch.Tensor) -> float:  # next-token loss on the sample itself
        v = logits.size(-1)
        return float(nn.functional.cross_entropy(logits[:, :-1].reshape(-1, v).float(), sample_idx[:, 1:].reshape(-1)))

    n_fwd = sample_idx.numel()
    prompt = sample_idx[0, : min(8, sample_idx.size(1))].tolist()
    n_new = max(1, min(new_tokens, float_model.cfg.seq_len - len(prompt)))
    report = {
        "float_bytes": f_bytes,
        "int8_bytes": q_bytes,
        "size_ratio": f_bytes / q_bytes,
        "float_loss": loss(f_logits),
        "int8_loss": loss(q_logits),
        "relative_logit_error": rel_err,
    }
    for tag, m in (("float", float_model), ("int8", q_model)):
        report[f"{tag}_forward_tokens_per_s"] = n_fwd / _best_seconds(lambda m=m: m(sample_idx), repeats)
        gen = lambda m=m: m.generate([prompt], n_new, temperature=0)  # noqa: E731
        report[f"{tag}_generate_tokens_per_s"] = n_new / _best_seconds(gen, repeats)
    report["forward_speedup"] = report["int8_forward_tokens_per_s"] / report["float_forward_tokens_per_s"]
    report["generate_speedup"] = report["int8_generate_tokens_per_s"] / report["float_generate_tokens_per_s"]
    return report
