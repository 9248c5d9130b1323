"""Run nanochat's own scripts/base_train.py, unmodified, on the bench's token blocks.

    python bench/peers/nanochat_main.py --tree TREE --chunk CHUNK_DIR --seed N -- <base_train.py arguments>

nanochat trains on its own tokenizer and its own downloaded data (FineWeb shards), neither of
which this bench can use: its tokens must be ours. So before base_train.py runs (as
`python -m scripts.base_train` would run it, in this process), three modules it imports are
put in place of nanochat's:

    nanochat.tokenizer   get_tokenizer: our BPE (its vocabulary size is what base_train reads);
                         get_token_bytes: None, since base_train's own val-bpb evaluation is off
                         (--eval-every=-1: the bench scores every system with one harness)
    nanochat.dataloader  the loaders: lmforge's TrainLoader over the chunk artifact's blocks
                         (the batches lmforge's run sees, same seed), yielding (x, y, state)
    wandb                an empty module: base_train imports it, then logs to DummyWandb (--run=dummy)

Everything else (model, init, Muon + AdamW setup, learning-rate/momentum/weight-decay
schedules, batch-size scaling of the rates, torch.compile, the loop, the checkpoint) is nanochat's.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import types
from pathlib import Path

from lm_core.tokenize.bpe import END_OF_TEXT, load_tokenizer, vocab_size
from lm_core.tokenize.stage import TOKENIZER_FILE
from lm_core.train.loader import TrainLoader, eval_batches
from lm_core.workspace import read_manifest


class BenchTokenizer:
    """The part of nanochat's tokenizer interface base_train uses, over our BPE."""

    def __init__(self, chunk_dir: Path):
        self.tok = load_tokenizer(chunk_dir / TOKENIZER_FILE)
        self.eot = self.tok.token_to_id(END_OF_TEXT)

    def get_vocab_size(self) -> int:
        return vocab_size(self.tok)

    def get_bos_token_id(self) -> int:
        return self.eot  # our documents are separated by end-of-text, where nanochat's begin with BOS

    def encode(self, text: str, prepend: int | None = None) -> list[int]:
        return ([prepend] if prepend is not None else []) + self.tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def tokenizer_module(chunk_dir: Path) -> types.ModuleType:
    module = types.ModuleType("nanochat.tokenizer")
    tokenizer = BenchTokenizer(chunk_dir)
    module.get_tokenizer = lambda: tokenizer
    module.get_token_bytes = lambda device="cpu": None
    return module


def dataloader_module(chunk_dir: Path, seed: int) -> types.ModuleType:
    """nanochat's two loader functions, with its signatures, over the chunk artifact's blocks."""
    seq_len = read_manifest(chunk_dir)["stats"]["seq_len"]

    def with_state(tokenizer, B, T, split, device="cpu", resume_state_dict=None, **_):
        if T != seq_len:
            raise ValueError(f"--max-seq-len {T} differs from the chunk's blocks ({seq_len} targets)")
        if split != "train":
            for x, y in eval_batches(chunk_dir / "val", B):
                yield x.contiguous(), y.contiguous(), {"epoch": 0, "pq_idx": 0, "rg_idx": 0}
            return
        loader = TrainLoader(chunk_dir / "train", B, seed, device=device)
        while True:
            x, y = loader.next()
            state = {"epoch": loader.state.epoch, "pq_idx": 0, "rg_idx": loader.state.consumed}
            yield x.contiguous(), y.contiguous(), state  # nanochat's loader yields contiguous tensors too

    def without_state(*args, **kwargs):
        for x, y, _ in with_state(*args, **kwargs):
            yield x, y

    module = types.ModuleType("nanochat.dataloader")
    module.tokenizing_distributed_data_loader_with_state_bos_bestfit = with_state
    module.tokenizing_distributed_data_loader_bos_bestfit = without_state
    return module


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, required=True)
    ap.add_argument("--chunk", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("train_args", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    sys.path.insert(0, str(args.tree))  # as `python -m scripts.base_train` run in the tree would have it

    sys.modules["nanochat.tokenizer"] = tokenizer_module(args.chunk)
    sys.modules["nanochat.dataloader"] = dataloader_module(args.chunk, args.seed)
    sys.modules["wandb"] = types.ModuleType("wandb")
    script = args.tree / "scripts" / "base_train.py"
    sys.argv = [str(script), *[a for a in args.train_args if a != "--"]]
    runpy.run_module("scripts.base_train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
