"""nanochat in the bench: its own scripts/base_train.py, with our tokens (see nanochat_main.py).

base_train.py is given the model size (--depth 4, --aspect-ratio 64 and --head-dim 64 make
lmforge's 4 layers of width 256 in 4 heads; --window-pattern L: full attention, as its CPU
example runs, since PyTorch's attention has no sliding window), the context, the batch
(--device-batch-size, --total-batch-size) and the step count (--num-iterations). Everything
else is its default: Muon for the blocks' matrices and AdamW for embeddings, head and scalars at
its default rates, scaled by its own rules for this batch size and depth; its warmup (40 steps),
warmdown (65%) and momentum and weight-decay schedules; torch.compile of the model. It runs in
fp32 on the CPU (NANOCHAT_DTYPE=float32, what it picks on a CPU anyway). Its own evaluations
(val bpb, CORE, samples) are off: the bench scores the checkpoint it saves at the last step.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

from peers.common import LossForward, Setup, Trained, count_params, run_logged

STEP_LINE = re.compile(r"^step (\d+)/\d+ .*\| dt: ([\d.]+)ms")
MODEL_TAG = "bench"


def base_train_args(setup: Setup) -> list[str]:
    if setup.n_embd % setup.n_layer or setup.n_embd % setup.n_head:
        raise ValueError(f"nanochat sizes its width as depth x aspect ratio: {setup.n_embd} over {setup.n_layer}")
    return [
        "--run=dummy",
        "--device-type=cpu",
        f"--depth={setup.n_layer}",
        f"--aspect-ratio={setup.n_embd // setup.n_layer}",
        f"--head-dim={setup.n_embd // setup.n_head}",
        "--window-pattern=L",
        f"--max-seq-len={setup.seq_len}",
        f"--device-batch-size={setup.micro_batch}",
        f"--total-batch-size={setup.batch_tokens}",
        f"--num-iterations={setup.steps}",
        "--eval-every=-1",
        "--core-metric-every=-1",
        "--sample-every=-1",
        f"--model-tag={MODEL_TAG}",
    ]


def train_nanochat(tree: Path, setup: Setup, work: Path) -> Trained:
    main = Path(__file__).with_name("nanochat_main.py")
    cmd = [sys.executable, str(main), "--tree", str(tree), "--chunk", str(setup.chunk_dir), "--seed", str(setup.seed)]
    # A cold compile cache in the run's own folder: the first step's compilation costs the same on every bench run.
    env = {
        "NANOCHAT_BASE_DIR": str(work / "base"),
        "NANOCHAT_DTYPE": "float32",
        "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor"),
    }
    lines = run_logged([*cmd, "--", *base_train_args(setup)], tree, env, work / "train.log", "nanochat")
    # base_train times each step from before its first forward to after the optimizer step (dt);
    # the first steps include torch.compile's compilation, which is part of what nanochat costs.
    times = {int(m.group(1)): float(m.group(2)) / 1000 for m in map(STEP_LINE.match, lines) if m}
    if sorted(times) != list(range(setup.steps)):
        raise RuntimeError(f"nanochat's log does not time steps 0..{setup.steps - 1} (log: {work / 'train.log'})")
    model = load_model(work / "base" / "base_checkpoints" / MODEL_TAG, setup.steps)
    warm = sum(t for s, t in times.items() if s > 10)  # nanochat's own clock leaves out the first 10 steps
    return Trained(
        system="nanochat",
        model=LossForward(model, lambda m, x, y: m(x, y)),
        context=model.config.sequence_len,
        params=count_params(model),
        steps=setup.steps,
        tokens=setup.tokens,
        train_seconds=sum(times.values()),
        notes=[
            "nanochat: reused scripts/base_train.py itself (model, init, Muon+AdamW setup_optimizer, rates, "
            "schedules, torch.compile, loop, checkpoint); replaced nanochat.tokenizer (our BPE), "
            "nanochat.dataloader (lmforge's TrainLoader over our blocks, lmforge's batch order) and wandb (unused)",
            f"nanochat: first step {times[0]:.1f} s (torch.compile, cold cache); after step 10, "
            "as nanochat's own clock counts: "
            f"{setup.batch_tokens * (setup.steps - 11) / warm:,.0f} tokens/s"
            if setup.steps > 11 and warm
            else "",
        ],
    )


def load_model(checkpoint_dir: Path, step: int) -> torch.nn.Module:
    """nanochat's GPT with the weights base_train saved, built as its checkpoint_manager.build_model
    builds it (on the meta device, then init_weights for the rotary tables, then the weights)."""
    from nanochat.gpt import GPT, GPTConfig  # the tree is on sys.path (quality_budget.py puts it there)

    state = torch.load(checkpoint_dir / f"model_{step:06d}.pt", map_location="cpu", weights_only=True)
    meta = json.loads((checkpoint_dir / f"meta_{step:06d}.json").read_text())
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    with torch.device("meta"):
        model = GPT(GPTConfig(**meta["model_config"]))
    model.to_empty(device="cpu")
    model.init_weights()
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
