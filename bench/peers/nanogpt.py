"""nanoGPT in the bench: its own `train.py`, unmodified, configured by a config file.

Its dataset is a folder of `train.bin`/`val.bin` (uint16 token ids, as its own prepare.py
scripts write them) made from the chunk artifact's blocks, and `meta.pkl` giving the vocabulary
size. The model is sized like lmforge's; the optimizer settings are nanoGPT's own for a small
model (its "baby GPT" config, config/train_shakespeare_char.py: lr 1e-3, min_lr 1e-4, beta2
0.99), with warmup and decay stretched to the bench's step count. The final weights are read from
its ckpt.pt into its own model class.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import torch

from lm_core.train.loader import BlockStore
from peers.common import LossForward, Setup, Trained, count_params, run_logged

# nanoGPT's baby-GPT optimizer settings (config/train_shakespeare_char.py); weight decay 0.1, beta1 0.9 and
# grad_clip 1.0 are train.py's defaults.
LEARNING_RATE = 1e-3
MIN_LR = 1e-4
BETA2 = 0.99
WARMUP_SHARE = 100 / 5000  # warmup_iters of max_iters there: its own share, whatever lmforge's recipe does
ITER_LINE = re.compile(r"^iter (\d+): loss [-\d.naninf]+, time ([\d.]+)ms")


def write_dataset(setup: Setup, folder: Path) -> Path:
    """train.bin / val.bin: each split's blocks end to end, in the artifact's order; meta.pkl: the vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    if setup.vocab_size > np.iinfo(np.uint16).max + 1:
        raise ValueError(f"nanoGPT reads uint16 token ids; the vocabulary has {setup.vocab_size}")
    for split in ("train", "val"):
        store = BlockStore(setup.chunk_dir / split)
        with (folder / f"{split}.bin").open("wb") as out:
            for part in store.parts:
                part.astype(np.uint16).tofile(out)
    with (folder / "meta.pkl").open("wb") as f:
        pickle.dump({"vocab_size": setup.vocab_size}, f)  # train.py reads the vocabulary size from here
    return folder


def warmup_steps(setup: Setup) -> int:
    return max(1, round(WARMUP_SHARE * setup.steps))


def config_text(setup: Setup, data_dir: Path, out_dir: Path) -> str:
    """A config file for train.py (it execs it). `dataset` is absolute: train.py joins it to 'data/', and
    os.path.join keeps an absolute second part."""
    values = {
        "out_dir": str(out_dir),
        "dataset": str(data_dir),
        "device": "cpu",
        "compile": False,
        "dtype": "float32",
        "n_layer": setup.n_layer,
        "n_head": setup.n_head,
        "n_embd": setup.n_embd,
        "block_size": setup.seq_len,
        "dropout": 0.0,
        "bias": False,
        "batch_size": setup.micro_batch,
        "gradient_accumulation_steps": setup.grad_accum,
        "max_iters": setup.steps,
        "lr_decay_iters": setup.steps,
        "warmup_iters": warmup_steps(setup),
        "learning_rate": LEARNING_RATE,
        "min_lr": MIN_LR,
        "beta2": BETA2,
        # train.py evaluates and saves at multiples of eval_interval only: at the last step, so that
        # ckpt.pt holds the weights after exactly `steps` updates (at step 0 it evaluates, with 1 batch).
        "eval_interval": setup.steps,
        "eval_iters": 1,
        "always_save_checkpoint": True,
        "log_interval": 1,
    }
    return "".join(f"{k} = {v!r}\n" for k, v in values.items())


def train_nanogpt(tree: Path, setup: Setup, work: Path) -> Trained:
    data_dir = write_dataset(setup, work / "data")
    out_dir = work / "out"
    config = work / "bench_config.py"
    config.write_text(config_text(setup, data_dir, out_dir))
    # cwd: the tree, since train.py execs 'configurator.py' from there
    lines = run_logged([sys.executable, "train.py", str(config)], tree, {}, work / "train.log", "nanoGPT")
    # Each logged iteration's time runs from the end of the one before (train.py's t0): their sum
    # over the first `steps` iterations is the loop's time for those updates, data loading included.
    times = {int(m.group(1)): float(m.group(2)) / 1000 for m in map(ITER_LINE.match, lines) if m}
    missing = [i for i in range(setup.steps) if i not in times]
    if missing:
        raise RuntimeError(f"nanoGPT's log has no time for iterations {missing[:5]}... (log: {work / 'train.log'})")
    model = load_model(tree, out_dir / "ckpt.pt", setup.steps)
    return Trained(
        system="nanoGPT",
        model=LossForward(model, lambda m, x, y: m(x, y)[1]),
        context=model.config.block_size,
        params=count_params(model),
        steps=setup.steps,
        tokens=setup.tokens,
        train_seconds=sum(times[i] for i in range(setup.steps)),
        notes=[
            f"nanoGPT: train.py as is (AdamW lr {LEARNING_RATE:g} -> {MIN_LR:g} cosine, beta2 {BETA2}, warmup "
            f"{warmup_steps(setup)}, GELU MLP, learned positions, tied head); its batches are random "
            "windows of train.bin (its own get_batch)"
        ],
    )


def load_model(tree: Path, ckpt_path: Path, steps: int) -> torch.nn.Module:
    """nanoGPT's GPT with the weights of its ckpt.pt (tensors and plain values only: weights_only)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt["iter_num"] != steps:
        raise RuntimeError(f"{ckpt_path} holds iteration {ckpt['iter_num']}, not {steps}")
    module = import_by_path(tree / "model.py", "nanogpt_model")
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}  # as its sample.py does
    model.load_state_dict(state)
    return model.eval()


def import_by_path(path: Path, name: str):
    """A peer's module by file: nanoGPT's is called `model`, too common a name to put on sys.path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
