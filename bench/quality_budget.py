"""Quality per unit of compute, side by side: lmforge, nanoGPT and nanochat on one footing.

    .venv/bin/python bench/quality_budget.py [--config configs/small.yaml] [--tokens 800000]
        [--systems lmforge,nanogpt,nanochat] [--set pretrain.optimizer=adamw ...] [--out table.json]

What the systems share:
- the corpus and split: the chunk artifact of the config, built by the data stages (cached in its
  workspace) as the pipeline builds it; every system trains on its train blocks;
- the token ids: lmforge's BPE (nanoGPT reads them as train.bin/val.bin, nanochat through
  lmforge's loader in place of its own, see bench/peers/nanochat_main.py);
- the token budget (--tokens, default the config's pretrain.token_budget), the context, the
  tokens per optimizer step and so the step count: lmforge's plan for the config (without --set);
- the model's size: layers, width and heads of lmforge's model (each system's parameter count
  is printed: the architectures differ, e.g. nanochat's value embeddings);
- one scoring harness: `lm_core.evaluate.perplexity.score_validation` over the full validation
  split (every block once), bits per byte = nats / ln 2 / UTF-8 bytes of the validation text;
- the clock: the training loop's seconds as each system's own per-step timer gives them (data
  loading and compilation included; start-up, scoring and the final checkpoint not).

What they do not share: the precision. lmforge's default (`pretrain.precision: auto`) autocasts
to bf16 where the CPU has it natively (AVX512-BF16, AMX); nanoGPT's and nanochat's scripts never
autocast on a CPU. `--set pretrain.precision=fp32` runs lmforge on their footing.

lmforge trains through its own stage (`run_pretrain`), its overrides (--set) applied after the
bench's (evaluations and checkpoints at the last step only, as the peers are run), in a
throwaway workspace so that it trains, and is timed, on every bench run; its MLflow run
(experiment `<name>-bench`) keeps the record. The peers run from their pinned commits
(bench/peers/source.py) in ~/.cache/lmforge-bench/, one training at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from peers.common import Setup, Trained, count_params
from peers.nanochat import train_nanochat
from peers.nanogpt import train_nanogpt
from peers.source import NANOCHAT, NANOGPT, ensure_tree

from lm_core.chunk.stage import run_chunk
from lm_core.clean.stage import run_clean
from lm_core.config import Config, load_config
from lm_core.crawl.stage import run_crawl
from lm_core.evaluate.perplexity import score_validation
from lm_core.textgen import TextModel
from lm_core.token_loss import Perplexity
from lm_core.tokenize.stage import run_tokenize
from lm_core.train.loop import TrainData
from lm_core.train.plan import TrainPlan, make_plan
from lm_core.train.precision import autocast_precision
from lm_core.train.stage import run_pretrain
from lm_core.workspace import ArtifactRef, Workspace

SYSTEMS = ("lmforge", "nanogpt", "nanochat")
# The peers evaluate and save once, at the end: so does lmforge here (neither changes what it trains).
LMFORGE_BENCH_SETTINGS = ["pretrain.eval_every=1000000000", "pretrain.checkpoint_every=1000000000"]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/small.yaml")
    ap.add_argument("--tokens", type=int, default=None, help="training tokens; default: pretrain.token_budget")
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="lmforge only: key=value")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, from " + ",".join(SYSTEMS))
    ap.add_argument("--out", type=Path, help="write the table as JSON too")
    ap.add_argument(
        "--peer-git",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a local git repository holding a peer's pinned commit, when its cache is empty",
    )
    args = ap.parse_args()
    args.systems = [s.strip().lower() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


# ----------------------------------------------------------------------------- the shared footing


def data_stages(cfg: Config) -> ArtifactRef:
    ws = Workspace(cfg.workspace)
    return run_chunk(cfg.chunk, run_tokenize(cfg.tokenize, run_clean(cfg.clean, run_crawl(cfg.crawl, ws), ws), ws), ws)


def lmforge_plan(cfg: Config, chunk: ArtifactRef) -> TrainPlan:
    data = TrainData.from_chunk(chunk.dir)
    return make_plan(cfg.pretrain, cfg.model, data.vocab_size, data.seq_len)


def shared_setup(cfg: Config, chunk: ArtifactRef) -> Setup:
    """What every system gets: lmforge's plan for the config as it stands (no --set)."""
    plan = lmforge_plan(cfg, chunk)
    m = plan.model
    return Setup(
        chunk_dir=chunk.dir.resolve(),
        vocab_size=m.vocab_size,
        seq_len=m.seq_len,
        seed=cfg.seed,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        micro_batch=plan.micro_batch,
        grad_accum=plan.grad_accum,
        steps=plan.steps,
    )


# ----------------------------------------------------------------------------- lmforge


def train_lmforge(cfg: Config, chunk: ArtifactRef, setup: Setup, work: Path) -> Trained:
    plan = lmforge_plan(cfg, chunk)
    if (plan.total_batch_tokens, plan.steps, plan.model.seq_len) != (setup.batch_tokens, setup.steps, setup.seq_len):
        print(f"  note: --set changed lmforge's batch or steps: {plan.steps} steps of {plan.total_batch_tokens} tokens")
    ref = run_pretrain(cfg, chunk, Workspace(work))
    s = ref.stats
    history = json.loads((ref.dir / "metrics.json").read_text())["history"]
    model = TextModel.load(ref.dir)
    return Trained(
        system="lmforge",
        model=model.model,
        context=model.context,
        params=count_params(model.model),
        steps=s["steps"],
        tokens=s["tokens"],
        train_seconds=loop_seconds(history, plan.total_batch_tokens),
        notes=[
            f"lmforge: run_pretrain, optimizer {plan.optimizer}, lr {plan.lr:g}, warmup {plan.warmup_steps}, "
            f"{plan.schedule}; stage total {s['seconds']:.0f} s with set-up and final evaluation; MLflow run "
            f"{s.get('mlflow_run_id', '?')}"
        ],
    )


def loop_seconds(history: list[dict], batch_tokens: int) -> float:
    """The training loop's time from lmforge's logged rows: each gives the tokens/s of the steps
    since the row before, timed from the end of that row's logging (the loop's start for the first)."""
    seconds, last_step = 0.0, 0
    for row in history:
        if "tokens_per_s" in row:  # rows of evaluation only carry no rate
            seconds += (row["step"] - last_step) * batch_tokens / row["tokens_per_s"]
            last_step = row["step"]
    return seconds


# ----------------------------------------------------------------------------- one harness


def score(trained: Trained, chunk_dir: Path, batch_size: int) -> Perplexity:
    """Every validation block once, each system's model called as forward(x, y) -> (_, mean loss)."""
    trained.model.eval()
    return score_validation(_Scorable(trained.model, trained.context), chunk_dir, batch_size)


class _Scorable:
    """What `score_validation` reads of a TextModel: the network and its context."""

    def __init__(self, model: torch.nn.Module, context: int):
        self.model, self.context = model, context


def result_row(t: Trained, p: Perplexity) -> dict:
    return {
        "system": t.system,
        "params": t.params,
        "tokens": t.tokens,
        "steps": t.steps,
        "train_seconds": round(t.train_seconds, 2),
        "tokens_per_s": round(t.tokens / t.train_seconds, 1) if t.train_seconds else None,
        "val_bpb": round(p.bpb, 5) if p.bpb is not None else None,
        "val_loss": round(p.loss, 5),
        "val_tokens_scored": p.tokens,
    }


# ----------------------------------------------------------------------------- the table


def print_table(rows: list[dict]) -> None:
    head = f"{'system':<10} {'params':>10} {'tokens':>10} {'steps':>6} {'train s':>9} {'tokens/s':>9} {'val bpb':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['system']:<10} {r['params']:>10,} {r['tokens']:>10,} {r['steps']:>6} {r['train_seconds']:>9.1f} "
            f"{r['tokens_per_s'] or 0:>9,.0f} {r['val_bpb'] or math.nan:>8.4f}"
        )


def ratios(rows: list[dict]) -> dict:
    """lmforge's bpb and tokens/s over the best peer's (lowest bpb; highest tokens/s)."""
    ours = next((r for r in rows if r["system"] == "lmforge"), None)
    peers = [r for r in rows if r["system"] != "lmforge"]
    if ours is None or not peers:
        return {}
    best_bpb = min(peers, key=lambda r: r["val_bpb"])
    best_speed = max(peers, key=lambda r: r["tokens_per_s"])
    return {
        "bpb_ratio": round(ours["val_bpb"] / best_bpb["val_bpb"], 4),
        "bpb_best_peer": best_bpb["system"],
        "tokens_per_s_ratio": round(ours["tokens_per_s"] / best_speed["tokens_per_s"], 4),
        "tokens_per_s_best_peer": best_speed["system"],
    }


def main() -> None:
    args = parse_args()
    peer_git = dict(item.split("=", 1) for item in args.peer_git)
    base = load_config(args.config)
    tokens = args.tokens or base.pretrain.token_budget
    budget = [*([f"pretrain.token_budget={tokens}"] if tokens else []), "pretrain.max_steps=null"]
    shared_cfg = load_config(args.config, budget)
    lmforge_cfg = load_config(args.config, [*budget, *LMFORGE_BENCH_SETTINGS, *args.overrides])
    lmforge_cfg.tracking.experiment = f"{lmforge_cfg.name}-bench"

    t0 = time.time()
    chunk = data_stages(shared_cfg)
    setup = shared_setup(shared_cfg, chunk)
    print(f"data stages: {time.time() - t0:.0f} s (cached if already built); chunk {chunk.fingerprint}")
    precision = autocast_precision(torch.device("cpu"), lmforge_cfg.pretrain.precision)
    print(
        f"footing: {setup.steps} steps x {setup.batch_tokens:,} tokens ({setup.micro_batch} x {setup.seq_len}"
        f" x {setup.grad_accum}) = {setup.tokens:,} tokens; {setup.n_layer} layers, width {setup.n_embd}, "
        f"{setup.n_head} heads, vocab {setup.vocab_size}; CPU, {torch.get_num_threads()} threads; the peers in "
        f"fp32 (neither autocasts on a CPU), lmforge in {precision} (its pretrain.precision)"
    )
    trainers = {
        "lmforge": lambda work: train_lmforge(lmforge_cfg, chunk, setup, work),
        "nanogpt": lambda work: train_nanogpt(ensure_tree(NANOGPT, peer_git.get("nanogpt")), setup, work),
        "nanochat": lambda work: train_nanochat(_on_path(ensure_tree(NANOCHAT, peer_git.get("nanochat"))), setup, work),
    }
    rows, notes = [], []
    for name in args.systems:
        print(f"\n== {name}", flush=True)
        load_before = os.getloadavg()[0]  # other processes on the machine slow any system they overlap
        with tempfile.TemporaryDirectory(prefix=f"quality-budget-{name}-") as tmp:
            trained = trainers[name](Path(tmp))
            load_after = os.getloadavg()[0]
            ppl = score(trained, setup.chunk_dir, setup.micro_batch)
        rows.append(result_row(trained, ppl) | {"load_avg_1m": [round(load_before, 2), round(load_after, 2)]})
        notes += [n for n in trained.notes if n]
        print(
            f"  {name}: {rows[-1]['train_seconds']:.0f} s training, val bpb {rows[-1]['val_bpb']}; "
            f"1-minute load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs",
            flush=True,
        )

    print(f"\nfull validation: {rows[0]['val_tokens_scored']:,} tokens scored per system\n")
    print_table(rows)
    ratio = ratios(rows)
    if ratio:
        print(
            f"\nlmforge / best peer: bpb x{ratio['bpb_ratio']:.3f} (vs {ratio['bpb_best_peer']}; below 1 is better), "
            f"tokens/s x{ratio['tokens_per_s_ratio']:.2f} (vs {ratio['tokens_per_s_best_peer']})"
        )
    print("\n" + "\n".join(f"- {n}" for n in notes))
    if args.out:
        report = {
            "config": args.config,
            "chunk": chunk.fingerprint,
            "setup": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(setup).items()},
            "lmforge_overrides": [*LMFORGE_BENCH_SETTINGS, *args.overrides],
            "peers": {p.name: {"repo": p.repo, "commit": p.commit} for p in (NANOGPT, NANOCHAT)},
            "systems": rows,
            "ratios": ratio,
            "notes": notes,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.out}")


def _on_path(tree: Path) -> Path:
    """nanochat's package is imported (to load its checkpoint) from its tree, as its scripts do."""
    if str(tree) not in sys.path:
        sys.path.insert(0, str(tree))
    return tree


if __name__ == "__main__":
    main()
