"""The chunk stage: token documents -> train/validation blocks ready for training.

    chunk/<fp>/tokenizer.json             copied from the tokenize artifact (training reads one folder)
    chunk/<fp>/{train,val}/part-*.arrow   block schema: fixed blocks of seq_len + 1 tokens
    chunk/<fp>/{train,val}/tail.arrow     tail schema: the tokens after the last whole block

Token shards are read in order, one at a time: each split's stream carries over from one
shard to the next, so blocks do not depend on how documents were spread over shards.
"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa

from lm_core.chunk.pack import BlockPacker, join_documents, split_is_val
from lm_core.config import ChunkConfig
from lm_core.progress import NullProgress, Progress
from lm_core.schemas import token_doc
from lm_core.shards import read_shard, shard_paths
from lm_core.tokenize import END_OF_TEXT, TOKENIZER_FILE, TOKENS_DIR, load_tokenizer, vocab_size
from lm_core.workspace import ArtifactRef, Workspace, fingerprint

STAGE = "chunk"
CODE_VERSION = 1
SPLITS = ("train", "val")


class EmptySplitError(ValueError):
    """The training split would hold no whole block: nothing to train on."""


def chunk_fingerprint(cfg: ChunkConfig, tokens: ArtifactRef) -> str:
    return fingerprint(STAGE, cfg.fingerprint_fields(), {"tokenize": tokens.fingerprint}, CODE_VERSION)


def _list_buffers(column: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of a list column, without copying the values."""
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy()[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


class _SplitTally:
    def __init__(self) -> None:
        self.documents = self.tokens = self.bytes = 0

    def add(self, chosen: np.ndarray, lengths: np.ndarray, n_bytes: np.ndarray) -> None:
        self.documents += int(chosen.sum())
        self.tokens += int(lengths[chosen].sum()) + int(chosen.sum())  # + one end-of-text each
        self.bytes += int(n_bytes[chosen].sum())


def run_chunk(cfg: ChunkConfig, tokens: ArtifactRef, ws: Workspace, progress: Progress = NullProgress()) -> ArtifactRef:
    fp = chunk_fingerprint(cfg, tokens)
    with ws.build(STAGE, fp, config=cfg.model_dump(mode="json"), inputs={"tokenize": tokens.fingerprint}) as build:
        if build.published:
            return build.ref
        tok = load_tokenizer(tokens.dir / TOKENIZER_FILE)
        vocab, eot = vocab_size(tok), tok.token_to_id(END_OF_TEXT)
        shutil.copyfile(tokens.dir / TOKENIZER_FILE, build.dir / TOKENIZER_FILE)

        packers = {s: BlockPacker(build.dir / s, cfg.seq_len, cfg.blocks_per_shard, vocab) for s in SPLITS}
        tallies = {s: _SplitTally() for s in SPLITS}
        sources = shard_paths(tokens.dir / TOKENS_DIR)
        progress.start(len(sources), "shards")
        for path in sources:
            docs = read_shard(path, token_doc(vocab))
            for batch in docs.to_batches():
                offsets, values = _list_buffers(batch.column("tokens"))
                lengths = np.diff(offsets)
                n_bytes = batch.column("n_bytes").to_numpy()
                is_val = split_is_val(batch.column("id").to_pylist(), cfg.split_salt, cfg.val_fraction)
                for split, chosen in (("train", ~is_val), ("val", is_val)):
                    if chosen.any():
                        packers[split].add(join_documents(offsets, values, chosen, eot))
                        tallies[split].add(chosen, lengths, n_bytes)
            progress.advance(1)
        for p in packers.values():
            p.close()

        if packers["train"].blocks == 0:
            t = tallies["train"]
            raise EmptySplitError(
                f"the train split holds {t.documents} documents and {t.tokens} tokens, less than one block of "
                f"seq_len + 1 = {cfg.seq_len + 1} tokens: add documents, lower chunk.seq_len or chunk.val_fraction"
            )
        build.stats = {
            split: {
                "documents": tallies[split].documents,
                "tokens": tallies[split].tokens,
                "blocks": packers[split].blocks,
                "tail_tokens": packers[split].tail_tokens,
                "shards": packers[split].shards,
                "bytes": tallies[split].bytes,
            }
            for split in SPLITS
        }
        build.stats |= {
            "rows": packers["train"].blocks + packers["val"].blocks,
            "seq_len": cfg.seq_len,
            "vocab_size": vocab,
            "dtype": str(packers["train"].dtype),
            "end_of_text_id": eot,
        }
    return build.ref
