"""float32 vs int8 (dynamic quantization) on the CPU: file size, forward and generate speed, error.

    .venv/bin/python bench/quantize_int8.py [MODEL_FOLDER] [--preset small] [--batch 8] [--seq 256]

With a model folder (model.safetensors + model_config.json) its weights are used; otherwise a
randomly initialised GPT of the preset. The int8 model is built the way it is shipped: int8_state
-> load_int8 (per-row int8 weights, rebuilt and dynamically quantized). Inputs are random ids:
speed does not depend on them; the logit error of a random-init model is only indicative.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lm_core.config import ModelConfig
from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import load_weights
from lm_core.quantize import compression_report, int8_state, load_int8
from lm_core.train.plan import model_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?", type=Path, help="a model folder; default: random init")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256, help="context, and the forward batch's length")
    ap.add_argument("--batch", type=int, default=8, help="rows of the forward batch")
    ap.add_argument("--new", type=int, default=64, help="tokens generated (batch 1, greedy)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    if args.folder:
        cfg = GPTConfig(**json.loads((args.folder / "model_config.json").read_text()))
        model = GPT(cfg)
        load_weights(model, args.folder / "model.safetensors")
        source = str(args.folder)
    else:
        cfg = model_config(ModelConfig(preset=args.preset), args.vocab, args.seq)
        model = GPT(cfg)
        source = f"preset {args.preset}, random init"
    model.eval()
    q_model = load_int8(int8_state(model), cfg)
    seq = min(args.seq, cfg.seq_len)
    sample = torch.randint(0, cfg.vocab_size, (args.batch, seq))
    print(
        f"model: {source} ({model.num_params() / 1e6:.1f}M params, vocab {cfg.vocab_size}, "
        f"tied {cfg.tie_embeddings}), threads={torch.get_num_threads()}, engine={torch.backends.quantized.engine}"
    )
    r = compression_report(model, q_model, sample, new_tokens=args.new, repeats=args.repeats)
    print(f"{'':>22} {'float32':>12} {'int8':>12} {'ratio':>8}")
    print(f"{'file bytes':>22} {r['float_bytes']:>12,} {r['int8_bytes']:>12,} {r['size_ratio']:>7.2f}x")
    rows = (("forward tok/s", "forward"), ("generate tok/s", "generate"))
    for label, key in rows:
        f, q = r[f"float_{key}_tokens_per_s"], r[f"int8_{key}_tokens_per_s"]
        print(f"{label:>22} {f:>12,.0f} {q:>12,.0f} {q / f:>7.2f}x")
    print(f"{'next-token loss':>22} {r['float_loss']:>12.4f} {r['int8_loss']:>12.4f}")
    print(f"relative logit error: {r['relative_logit_error']:.4f}")
    print(f"(forward: batch {args.batch} x {seq} tokens; generate: batch 1, {args.new} new tokens, KV cache)")


if __name__ == "__main__":
    main()
