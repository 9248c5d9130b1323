"""CPU training efficiency: model FLOP/s as a share of the matmul FLOP/s measured in the same
run at the model's own shapes (a CPU has no published peak, so this is not MFU; issue target:
>= 60% for the `small` preset, fp32), and the share of step time spent waiting on the data
loader (target: <= 2%).

    .venv/bin/python bench/train_cpu.py [--preset small] [--micro-batch 16] [--steps 30]

Uses random token blocks written as real chunk shards (the loader memory-maps them as in a run).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from lm_core import schemas
from lm_core.config import load_config
from lm_core.shards import write_shard
from lm_core.train.loop import TrainData, measure_matmul_flops, train
from lm_core.workspace import write_json_atomic


def write_chunk(root: Path, splits: dict[str, np.ndarray], vocab: int, bytes_per_token: int) -> Path:
    """Blocks (one row of seq_len + 1 ids each) per split, written as a chunk artifact's shards
    and manifest, which the training loader reads as in a run."""
    seq_len = splits["train"].shape[1] - 1
    for split, arr in splits.items():
        table = pa.table(
            {"tokens": pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), seq_len + 1)},
            schema=schemas.block(vocab, seq_len),
        )
        write_shard(root / split / "part-00000.arrow", table)
    val_tokens = splits["val"].size
    stats = {
        "vocab_size": vocab,
        "seq_len": seq_len,
        "val": {"tokens": val_tokens, "bytes": bytes_per_token * val_tokens},
    }
    write_json_atomic(root / "_manifest.json", {"stats": stats, "inputs": {}})
    return root


def write_blocks(root: Path, vocab: int, seq_len: int, n_train: int) -> Path:
    rng = np.random.default_rng(0)
    splits = {
        split: rng.integers(0, vocab, (n, seq_len + 1), dtype=np.uint16)
        for split, n in (("train", n_train), ("val", 64))
    }
    return write_chunk(root, splits, vocab, bytes_per_token=4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of the figures")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        root = write_blocks(Path(d) / "chunk", args.vocab, args.seq_len, n_train=args.micro_batch * (args.steps + 2))
        cfg = load_config(
            None,
            [
                f"model.preset={args.preset}",
                f"pretrain.micro_batch={args.micro_batch}",
                f"pretrain.max_steps={args.steps}",
                "pretrain.log_every=1",
                f"pretrain.eval_every={10 * args.steps}",
                f"pretrain.checkpoint_every={10 * args.steps}",
                "pretrain.precision=fp32",
                "pretrain.device=cpu",
            ],
        )
        result = train(cfg.pretrain, cfg.model, TrainData.from_chunk(root), Path(d) / "out", seed=0)
        # the model's widest matmul: a micro-batch's tokens through the MLP's up-projection
        shape = (args.micro_batch * args.seq_len, result.plan.model.n_embd, result.plan.model.mlp_hidden)
        peak_after = measure_matmul_flops.__wrapped__(torch.device("cpu"), None, *shape, runs=5, seconds=1.0)

    rows = [r for r in result.history if "tokens_per_s" in r and r["step"] > args.warmup]
    tok_s = sum(r["tokens_per_s"] for r in rows) / len(rows)
    wait = sum(r["loader_wait_fraction"] for r in rows) / len(rows)
    flops = result.plan.flops_per_token * tok_s
    peak_before = measure_matmul_flops(torch.device("cpu"), None, *shape)  # the training's own probe (cached)
    peak = max(peak_before, peak_after)
    print(
        f"preset {args.preset}: {result.plan.params / 1e6:.2f}M params, "
        f"{result.plan.flops_per_token / 1e6:.1f} MFLOP/token, "
        f"micro-batch {args.micro_batch} x {args.seq_len}, torch threads {torch.get_num_threads()}"
    )
    m, k, n = shape
    print(
        f"measured fp32 matmul peak ({m}x{k} @ {k}x{n}, best of several runs): {peak_before / 1e9:.1f} GFLOP/s "
        f"before training, {peak_after / 1e9:.1f} after"
    )
    print(f"training: {tok_s:,.0f} tokens/s = {flops / 1e9:.1f} GFLOP/s")
    print(
        f"{100 * flops / peak:.1f}% of the measured matmul peak (not MFU: a CPU has no published peak; target >= 60%)"
    )
    print(f"data-loader wait: {100 * wait:.2f}% of step time (target <= 2%)")


if __name__ == "__main__":
    main()
