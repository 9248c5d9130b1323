"""The GPU check: lmforge's own training loop (`lm_core.train.loop.train`, the code `lmforge run`
trains with) on every GPU present, in bf16, for a few hundred steps of the `d12` preset, then
one verdict: the loss fell, the MFU against the card's published peak, the tokens/s.

    torchrun --standalone --nproc_per_node=$(nvidia-smi -L | wc -l) bench/gpu_check.py [--steps 300]

With two GPUs or more it trains data-parallel (DDP, one process per GPU, the default strategy;
that DDP equals one process at the same global batch is tests/test_train.py's, on CPU). On one
GPU it trains as a single rank. `--device cpu --preset tiny
--steps 20` runs the same script here, as a smoke test.

The data is this repository's own text (Python, Markdown, YAML), one byte per token: nothing
to download, and learnable, so a falling loss means training works. A device machine lacks
some of lmforge's dependencies (pydantic, PyYAML at times): see bench/gpu_check.sh, which
installs carried wheels first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train_cpu import write_chunk  # noqa: E402  (bench/, this script's folder)

from lm_core.config import load_config  # noqa: E402
from lm_core.train.loop import TrainData, train  # noqa: E402

VOCAB = 256  # bytes


def repo_bytes() -> np.ndarray:
    """Every text file of the repository, in a fixed order, as one stream of bytes."""
    parts = []
    for pattern in ("**/*.py", "**/*.md", "**/*.yaml"):
        for path in sorted(ROOT.glob(pattern)):
            if ".venv" not in path.parts and "node_modules" not in path.parts:
                parts.append(path.read_bytes())
    return np.frombuffer(b"\n".join(parts), dtype=np.uint8)


def write_repo_chunk(root: Path, seq_len: int) -> Path:
    """The stream cut into blocks of seq_len + 1, written as a chunk artifact's shards: the last
    32 blocks are validation."""
    data = repo_bytes()
    n = len(data) // (seq_len + 1)
    blocks = data[: n * (seq_len + 1)].astype(np.uint16).reshape(n, seq_len + 1)
    return write_chunk(root, {"train": blocks[:-32], "val": blocks[-32:]}, VOCAB, bytes_per_token=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="d12")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", type=Path, help="write the verdict as JSON too")
    args = ap.parse_args()

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for the smoke test")
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{rank}-") as tmp:
        chunk = write_repo_chunk(Path(tmp) / "chunk", args.seq_len)  # each rank its own copy: same bytes
        cfg = load_config(
            None,
            [
                f"model.preset={args.preset}",
                f"pretrain.max_steps={args.steps}",
                f"pretrain.micro_batch={args.micro_batch}",
                f"pretrain.device={args.device}",
                "pretrain.precision=" + ("bf16" if args.device == "cuda" else "fp32"),
                "pretrain.log_every=1",  # the first row is the untrained loss, about ln 256
                f"pretrain.eval_every={args.steps}",
                f"pretrain.checkpoint_every={10 * args.steps}",
                "pretrain.eval_batches=8",
                "pretrain.compile=" + ("true" if args.device == "cuda" else "false"),
            ],
        )
        result = train(cfg.pretrain, cfg.model, TrainData.from_chunk(chunk), Path(tmp) / "out", seed=0)

    if rank != 0:
        return
    rows = [r for r in result.history if "loss" in r]
    steady = [r for r in rows if r["step"] > min(50, args.steps // 3)]  # past compilation and warmup
    metric = "mfu" if any("mfu" in r for r in rows) else "matmul_share"
    share = sorted(r[metric] for r in steady if metric in r)
    tok_s = sorted(r["tokens_per_s"] for r in steady)
    verdict = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "ranks": world,
        "preset": args.preset,
        "params": result.plan.params,
        "steps": result.steps_done,
        "tokens_per_step": result.plan.total_batch_tokens,
        "optimizer": result.plan.optimizer,
        "first_loss": rows[0]["loss"],
        "last_loss": rows[-1]["loss"],
        "val_bpb": result.final.get("val_bpb"),
        "tokens_per_s_median": tok_s[len(tok_s) // 2] if tok_s else None,
        f"{metric}_median": share[len(share) // 2] if share else None,
        "peak": result.peak,
        "loss_fell": rows[-1]["loss"] < 0.7 * rows[0]["loss"],
    }
    print(json.dumps(verdict, indent=2))
    if args.out:
        args.out.write_text(json.dumps(verdict, indent=2))
    if not verdict["loss_fell"]:
        raise SystemExit("GPU check failed: the loss did not fall by 30%")


if __name__ == "__main__":
    main()
