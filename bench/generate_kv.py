"""KV-cache generation vs recomputing the whole prefix at every step (issue target: >= 10x).

    .venv/bin/python bench/generate_kv.py [--preset small] [--new 512] [--batch 1] [--repeats 3]

Same model, same prompt, greedy decoding: both paths must produce the same tokens; the script
prints tokens/s of each and the ratio. Each path runs `--repeats` times and its best time counts
(the same statistic for both: a busy machine only ever adds time).
"""

from __future__ import annotations

import argparse
import time

import torch

from lm_core.config import ModelConfig
from lm_core.model import GPT
from lm_core.train.plan import model_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--new", type=int, default=512)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = model_config(ModelConfig(preset=args.preset), args.vocab, args.prompt + args.new)
    model = GPT(cfg).eval()
    prompts = [torch.randint(0, args.vocab, (args.prompt,)).tolist() for _ in range(args.batch)]
    print(
        f"model: {args.preset} ({model.num_params() / 1e6:.1f}M params), threads={torch.get_num_threads()}, "
        f"prompt {args.prompt} tokens, {args.new} new tokens, batch {args.batch}"
    )

    for use_cache in (True, False):  # warm up kernels
        model.generate(prompts, 8, temperature=0, use_cache=use_cache)
    timings, outputs = {}, {}
    for name, use_cache in (("kv-cache", True), ("recompute", False)):
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            outputs[name] = model.generate(prompts, args.new, temperature=0, use_cache=use_cache)
            runs.append(time.perf_counter() - t0)
        timings[name] = min(runs)
        print(
            f"{name:>10}: {timings[name]:7.2f} s  {args.new * args.batch / timings[name]:9.1f} tokens/s"
            f"  (runs: {', '.join(f'{t:.2f}' for t in runs)})"
        )
    assert outputs["kv-cache"] == outputs["recompute"], "the two paths must generate the same tokens"
    print(f"speed-up: {timings['recompute'] / timings['kv-cache']:.1f}x (target >= 10x); outputs identical")


if __name__ == "__main__":
    main()
