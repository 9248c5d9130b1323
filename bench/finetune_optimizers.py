"""Fine-tuning's optimizer: SFT with AdamW against SFT with Muon at several rates, from one base
model, then DPO from each SFT model with the same optimizer.

    .venv/bin/python bench/finetune_optimizers.py [--config configs/small.yaml] [--muon-lr 0.003 0.006 ...]
        [--precision auto|fp32|bf16]

Needs the config's chunk artifact in its workspace (`./forge run` makes it); the base model is
the config's pretrain (built here if missing, minutes). Prints, per optimizer and rate, SFT's
held-out loss, the BLEU and chrF (sacrebleu) of its greedy answers to the held-out questions and
its perplexity on pretraining's validation blocks (what it forgot), and DPO's held-out
preference accuracy. The results are docs/benchmarks.md's "Fine-tuning with
Muon".
"""

from __future__ import annotations

import argparse
import time

from lm_core.config import Config, load_config
from lm_core.evaluate.sets import CHAT, chat_pairs
from lm_core.evaluate.stage import evaluate_model
from lm_core.finetune.stage import resolve_base, run_finetune
from lm_core.textgen import TextModel
from lm_core.train.stage import run_pretrain
from lm_core.workspace import ArtifactRef, Workspace


def with_finetune(cfg: Config, **changes) -> Config:
    return cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update=changes)})


def chat_scores(folder, cfg: Config, chunk: ArtifactRef, pairs) -> str:
    """BLEU and chrF on the held-out pairs, and perplexity on pretraining's validation blocks (what
    fine-tuning forgot: the chat model's gate compares it first)."""
    m = evaluate_model(TextModel.load(folder), cfg.evaluate, chunk.dir, pairs).metrics
    return f"BLEU {m[f'bleu.{CHAT}']:.2f}, chrF {m[f'chrf.{CHAT}']:.2f}, val perplexity {m['val_ppl']:.1f}"


def sft_then_dpo(
    cfg: Config, base: ArtifactRef, chunk: ArtifactRef, ws: Workspace, optimizer: str, lr: float | None
) -> ArtifactRef:
    """SFT from `base`, then DPO from the SFT model, both with `optimizer`; returns the SFT model."""
    sft_cfg = with_finetune(cfg, method="sft", optimizer=optimizer, lr=lr)
    t0 = time.time()
    sft = run_finetune(sft_cfg, resolve_base(sft_cfg, base, ws), ws)
    s = sft.stats
    print(
        f"SFT {optimizer} lr {sft_cfg.finetune.peak_lr:g}, {s['precision']}: "
        f"{s['steps']} steps on {s['train_examples']} chats "
        f"({time.time() - t0:.0f} s); held-out loss {s['initial_heldout_loss']:.3f} -> {s['heldout_loss']:.3f}; "
        f"{chat_scores(sft.dir, cfg, chunk, {CHAT: chat_pairs(sft.dir)})} ({s['heldout_examples']} held-out pairs)",
        flush=True,
    )
    dpo_cfg = with_finetune(cfg, method="dpo", optimizer=optimizer, lr=lr, max_steps=60, base=sft.fingerprint)
    dpo = run_finetune(dpo_cfg, resolve_base(dpo_cfg, None, ws), ws)
    d = dpo.stats
    print(
        f"  DPO {optimizer} lr {dpo_cfg.finetune.peak_lr:g}: held-out preference accuracy "
        f"{d['initial_heldout_preference_accuracy']:.1%} -> {d['heldout_preference_accuracy']:.1%}, "
        f"reward margin {d['heldout_reward_margin']:.3f}",
        flush=True,
    )
    return sft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/small.yaml")
    ap.add_argument("--adamw-lr", type=float, default=None, help="default: finetune's AdamW default")
    ap.add_argument("--muon-lr", type=float, nargs="*", default=[0.0004, 0.001, 0.003, 0.006, 0.012])
    ap.add_argument("--precision", default="auto", help="finetune.precision of every run (auto|fp32|bf16)")
    args = ap.parse_args()
    cfg = load_config(args.config, ["tracking.system_metrics=false", f"finetune.precision={args.precision}"])
    ws = Workspace(cfg.workspace)
    chunk = ws.resolve("chunk", "latest")
    base = run_pretrain(cfg, chunk, ws)
    print(f"base model: pretrain {base.fingerprint}, val bpb {base.stats['val_bpb']:.3f}", flush=True)
    sfts = [sft_then_dpo(cfg, base, chunk, ws, "adamw", args.adamw_lr)]
    sfts += [sft_then_dpo(cfg, base, chunk, ws, "muon", lr) for lr in args.muon_lr]
    # every SFT model held out the same chats: the base model answers them too
    print(f"base model on the same pairs: {chat_scores(base.dir, cfg, chunk, {CHAT: chat_pairs(sfts[0].dir)})}")


if __name__ == "__main__":
    main()
