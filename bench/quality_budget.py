"""Quality per unit of compute: validation bits-per-byte after a fixed token budget.

    .venv/bin/python bench/quality_budget.py [--config configs/small.yaml] [--tokens 2000000]

Runs the data stages (cached when already done) and pretrains with `pretrain.token_budget`
fixed, so later changes to the model or the loop can be compared on the same footing. The run
is logged to MLflow (experiment `<name>-bench`) with the budget as a param.
"""

from __future__ import annotations

import argparse
import time

from lm_core.chunk.stage import run_chunk
from lm_core.clean.stage import run_clean
from lm_core.config import load_config
from lm_core.crawl.stage import run_crawl
from lm_core.tokenize.stage import run_tokenize
from lm_core.train.stage import run_pretrain
from lm_core.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.yaml")
    ap.add_argument("--tokens", type=int, default=2_000_000)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"pretrain.token_budget={args.tokens}", "pretrain.max_steps=null", *args.overrides])
    cfg.tracking.experiment = f"{cfg.name}-bench"
    ws = Workspace(cfg.workspace)
    t0 = time.time()
    chunk = run_chunk(cfg.chunk, run_tokenize(cfg.tokenize, run_clean(cfg.clean, run_crawl(cfg.crawl, ws), ws), ws), ws)
    t1 = time.time()
    model = run_pretrain(cfg, chunk, ws)
    s = model.stats
    print(f"data stages: {t1 - t0:.0f} s (cached if already built); chunk {chunk.fingerprint}")
    print(
        f"model: preset {cfg.model.preset}, {s['params'] / 1e6:.2f}M params; budget {s['tokens']:,} tokens "
        f"in {s['steps']} steps, {s['seconds']:.0f} s, {s.get('tokens_per_s', 0):,.0f} tokens/s"
    )
    print(f"validation: loss {s['val_loss']:.4f}, perplexity {s['val_ppl']:.2f}, bits/byte {s['val_bpb']:.4f}")
    print(f"pretrain artifact {model.fingerprint}; MLflow run {s['mlflow_run_id']}")


if __name__ == "__main__":
    main()
