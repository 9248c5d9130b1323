"""Fine-tuning on the `small` preset: what SFT and DPO buy over the base model, on the same
held-out pairs, and what int8 costs and saves.

    .venv/bin/python bench/finetune_small.py [--workspace workspace] [--config configs/small.yaml]

Needs the small lifecycle's data and pretrained model in the workspace (`./forge run` makes
them; a missing stage is built here, which takes minutes). Prints:

- held-out BLEU and chrF of the base model and of the SFT model on the same question/answer
  pairs (the base model continues the question as text; the chat model answers it): must rise;
- DPO's held-out preference accuracy before and after (must rise above 50%) and reward margin;
- the int8 copy against the float model: file size, forward and generation tokens/s, loss.
"""

from __future__ import annotations

import argparse
import json

from lm_core.config import load_config
from lm_core.evaluate.sets import CHAT, chat_pairs
from lm_core.evaluate.stage import evaluate_model
from lm_core.finetune.stage import resolve_base, run_finetune
from lm_core.textgen import TextModel
from lm_core.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/small.yaml")
    ap.add_argument("--workspace", default=None)
    args = ap.parse_args()
    overrides = [f"workspace={args.workspace}"] if args.workspace else []
    cfg = load_config(args.config, overrides + ["tracking.system_metrics=false"])
    ws = Workspace(cfg.workspace)
    base = ws.resolve("pretrain", "latest")
    print(f"base model: pretrain {base.fingerprint} (val bpb {base.stats.get('val_bpb', float('nan')):.3f})")

    sft_cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"method": "sft", "quantize": True})})
    sft = run_finetune(sft_cfg, resolve_base(sft_cfg, base, ws), ws)
    pairs = {CHAT: chat_pairs(sft.dir)}
    scores = {}
    for label, folder in (("base", base.dir), ("sft", sft.dir)):
        result = evaluate_model(TextModel.load(folder), cfg.evaluate, None, pairs)
        scores[label] = result.metrics
    n = len(pairs[CHAT])
    print(f"SFT: {sft.stats['steps']} steps on {sft.stats['train_examples']} chats ({sft.stats['source']}); "
          f"held-out loss {sft.stats['initial_heldout_loss']:.3f} -> {sft.stats['heldout_loss']:.3f}")  # fmt: skip
    for metric in ("bleu", "chrf"):
        b, s = scores["base"][f"{metric}.{CHAT}"], scores["sft"][f"{metric}.{CHAT}"]
        print(f"  held-out {metric} on {n} pairs: base {b:.2f} -> SFT {s:.2f} ({'rose' if s > b else 'DID NOT rise'})")

    dpo_cfg = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"method": "dpo", "max_steps": 60})})
    dpo_cfg = dpo_cfg.model_copy(update={"finetune": dpo_cfg.finetune.model_copy(update={"base": sft.fingerprint})})
    dpo = run_finetune(dpo_cfg, resolve_base(dpo_cfg, None, ws), ws)
    before, after = dpo.stats["initial_heldout_preference_accuracy"], dpo.stats["heldout_preference_accuracy"]
    print(f"DPO from the SFT model: {dpo.stats['steps']} steps on {dpo.stats['train_examples']} pairs; held-out "
          f"preference accuracy {before:.1%} -> {after:.1%} ({'above' if after > 0.5 else 'NOT above'} 50%), "
          f"reward margin {dpo.stats['heldout_reward_margin']:.3f}")  # fmt: skip

    r = json.loads((sft.dir / "int8" / "compression.json").read_text())
    print(f"int8 vs float: {r['float_bytes'] / 1e6:.1f} MB -> {r['int8_bytes'] / 1e6:.1f} MB ({r['size_ratio']:.2f}x), "
          f"forward {r['forward_speedup']:.2f}x, generate {r['generate_speedup']:.2f}x, "
          f"loss {r['float_loss']:.4f} -> {r['int8_loss']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
