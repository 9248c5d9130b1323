"""One training step, lmforge's model against nanoGPT's at equal shape: seconds per step for the
forward + backward and for the optimizer, side by side, on random tokens (no data loader, no
logging), then torch.profiler's heaviest operators of lmforge's step.

    .venv/bin/python bench/step_time.py [--layers 4 --width 256 --heads 4 --vocab 8192 --seq 256 --batch 16]

nanoGPT's `model.py` comes from the pinned tree `bench/quality_budget.py` uses (its cache, or
`--peer-git nanogpt=PATH`). Both models run eagerly in fp32 with the same threads; each figure
is the median of `--steps` timed steps after `--warmup` untimed ones, taken alternately so that
a noisy neighbour hits both alike. nanoGPT's `train.py` never autocasts on a CPU; lmforge's
default (`pretrain.precision: auto`) does, in bf16, where the CPU has it natively (AVX512-BF16,
AMX): its first row is that default, the others are fp32 throughout for an equal footing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.nanogpt import import_by_path  # noqa: E402
from peers.source import NANOGPT, ensure_tree  # noqa: E402

from lm_core.model import GPT, GPTConfig  # noqa: E402
from lm_core.train.optim import MuonRates, adamw, muon_and_adamw  # noqa: E402
from lm_core.train.precision import AUTOCAST_DTYPES, autocast_precision, newton_schulz_dtype  # noqa: E402


def nanogpt_model(args) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
    tree = ensure_tree(NANOGPT, dict(p.split("=", 1) for p in args.peer_git).get("nanogpt"))
    mod = import_by_path(tree / "model.py", "nanogpt_model")
    cfg = mod.GPTConfig(
        block_size=args.seq, vocab_size=args.vocab, n_layer=args.layers, n_head=args.heads,
        n_embd=args.width, dropout=0.0, bias=False,
    )  # fmt: skip
    model = mod.GPT(cfg)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")
    return model, [opt]


def lmforge_model(args, optimizer: str, ns_dtype=torch.float32) -> tuple[nn.Module, list[torch.optim.Optimizer]]:
    cfg = GPTConfig(
        vocab_size=args.vocab, seq_len=args.seq, n_layer=args.layers, n_head=args.heads, n_kv_head=args.heads,
        n_embd=args.width, tie_embeddings=False, qk_norm=True, zero_init_out=True,
    )  # fmt: skip
    model = GPT(cfg)
    if optimizer == "muon":
        rates = MuonRates.for_width(args.width)
        return model, muon_and_adamw(model, rates, False, 0.0, (0.8, 0.95), ns_dtype=ns_dtype)
    return model, [adamw(model.parameters(), 1e-3, 0.1, (0.9, 0.99))]


class Timed:
    """One system's step, split into forward+backward and optimizer time."""

    def __init__(
        self, name: str, model: nn.Module, optimizers: list[torch.optim.Optimizer], autocast: torch.dtype | None = None
    ):
        self.name, self.model, self.optimizers, self.autocast = name, model, optimizers, autocast
        self.fwd_bwd: list[float] = []
        self.opt: list[float] = []

    def step(self, x: torch.Tensor, y: torch.Tensor, record: bool) -> None:
        t0 = time.perf_counter()
        with torch.autocast("cpu", self.autocast) if self.autocast else contextlib.nullcontext():
            _, loss = self.model(x, y)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        t1 = time.perf_counter()
        for opt in self.optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if record:
            self.fwd_bwd.append(t1 - t0)
            self.opt.append(t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's table for lmforge's step")
    ap.add_argument("--peer-git", action="append", default=[], metavar="NAME=PATH")
    args = ap.parse_args()

    torch.manual_seed(0)
    cpu = torch.device("cpu")
    precision, ns_dtype = autocast_precision(cpu), newton_schulz_dtype(cpu)
    systems = [
        Timed("nanoGPT (AdamW)", *nanogpt_model(args)),
        Timed("lmforge (default)", *lmforge_model(args, "muon", ns_dtype), AUTOCAST_DTYPES[precision]),
        Timed("lmforge (muon fp32)", *lmforge_model(args, "muon")),
        Timed("lmforge (adamw fp32)", *lmforge_model(args, "adamw")),
    ]
    tokens = args.batch * args.seq
    for i in range(args.warmup + args.steps):
        x = torch.randint(0, args.vocab, (args.batch, args.seq))
        y = torch.randint(0, args.vocab, (args.batch, args.seq))
        for s in systems:
            s.step(x, y, record=i >= args.warmup)

    print(
        f"{args.layers} layers x {args.width} wide, {args.heads} heads, vocab {args.vocab}, "
        f"{args.batch} x {args.seq} tokens per step, {torch.get_num_threads()} threads"
    )
    print(f"lmforge (default): Muon, {precision} forward and backward, Newton-Schulz in {ns_dtype} (auto here)")
    print(f"{'system':<20} {'params':>10} {'fwd+bwd s':>10} {'optim s':>8} {'step s':>8} {'tokens/s':>9}")
    base = None
    for s in systems:
        fb, op = statistics.median(s.fwd_bwd), statistics.median(s.opt)
        params = sum(p.numel() for p in s.model.parameters())
        tok_s = tokens / (fb + op)
        base = base or tok_s
        print(f"{s.name:<20} {params:>10,} {fb:>10.3f} {op:>8.3f} {fb + op:>8.3f} {tok_s:>9,.0f}  x{tok_s / base:.2f}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        s = systems[1]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                x = torch.randint(0, args.vocab, (args.batch, args.seq))
                s.step(x, x, record=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
