"""The chunk stage: token documents -> train/validation blocks ready for training.

    chunk/<fp>/tokenizer.json             copied from the tokenize artifact (training reads one folder)
    chunk/<fp>/{train,val}/part-*.arrow   block schema: fixed blocks of seq_len + 1 tokens
    chunk/<fp>/{train,val}/tail.arrow     tail schema: the tokens after the last whole block

Each split's documents are packed in groups (`document_groups`): a nightly refresh where a few
pages changed rebuilds the blocks of their groups only, and the others come out byte for byte
the same. Before packing, training documents lose the passages they share with an evaluation
set (`decontaminate.py`); the manifest's `decontaminate` stats say what was cut, per set.

The token shards are read (memory-mapped) once to index the documents and hash the validation
documents, once more to count where evaluation windows occur in training documents, and once
to pack, group by group: memory holds the index, the evaluation hashes and one group.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from lm_core.chunk.decontaminate import VALIDATION, Decontaminator, evaluation_texts
from lm_core.chunk.pack import BlockPacker, GroupPacker, document_groups, join_documents, split_is_val
from lm_core.config import ChunkConfig, Config, EvaluateConfig
from lm_core.progress import NullProgress, Progress
from lm_core.schemas import token_doc
from lm_core.shards import read_shard, shard_paths
from lm_core.tokenize.bpe import END_OF_TEXT, load_tokenizer, vocab_size
from lm_core.tokenize.stage import TOKENIZER_FILE, TOKENS_DIR
from lm_core.workspace import ArtifactRef, StageKey, Workspace, fingerprint

if TYPE_CHECKING:
    from lm_core.stages import Inputs, StageRun

STAGE = "chunk"
CODE_VERSION = 2  # 2: documents packed in groups by id hash; training decontaminated
SPLITS = ("train", "val")


class EmptySplitError(ValueError):
    """The training split would hold no whole block: nothing to train on."""


def chunk_inputs(cfg: ChunkConfig, tokens: ArtifactRef, evaluation: EvaluateConfig | None = None) -> dict[str, str]:
    """The tokenize artifact and, when decontaminating, what identifies the evaluation sets: the
    content of their local files and the settings that choose and read them."""
    inputs = {"tokenize": tokens.fingerprint}
    if cfg.decontaminate.enabled and evaluation is not None:
        from lm_core.evaluate.sets import source_digests  # only when decontaminating

        sources = evaluation.model_dump(mode="json", include={"texts", "hf_texts"})
        for src in sources["texts"]:
            src.pop("path")  # the files' content and names below it are digested instead
        inputs["evaluate.sources"] = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
        inputs |= {f"evaluate.{k}": v for k, v in source_digests(evaluation).items()}
    return inputs


def chunk_fingerprint(cfg: ChunkConfig, tokens: ArtifactRef, evaluation: EvaluateConfig | None = None) -> str:
    return _key(cfg, tokens, evaluation).fingerprint


def chunk_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    """Training is decontaminated against the run's evaluation sets (its `evaluate` section)."""
    return _key(cfg.chunk, inputs["tokenize"], cfg.evaluate)


def _key(cfg: ChunkConfig, tokens: ArtifactRef, evaluation: EvaluateConfig | None) -> StageKey:
    inputs = chunk_inputs(cfg, tokens, evaluation)
    fp = fingerprint(STAGE, cfg.fingerprint_fields(), inputs, CODE_VERSION)
    return StageKey(stage=STAGE, fingerprint=fp, config=cfg.model_dump(mode="json"), inputs=inputs)


def chunk_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_chunk(cfg.chunk, inputs["tokenize"], ws, run.progress, cfg.evaluate, key=key)


def _list_buffers(column: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets from 0, flat values) of a list column, without copying the values."""
    offsets = column.offsets.to_numpy()
    values = column.values.to_numpy()[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


class _Documents:
    """Every document of a tokenize artifact by reference: its tokens stay in the memory-mapped
    shards; the index holds its batch, row, length, bytes and split."""

    def __init__(self, cfg: ChunkConfig, folder, vocab: int):
        self.batches: list[tuple[np.ndarray, np.ndarray]] = []  # (offsets, values) of each record batch
        ids: list[str] = []
        where, lengths, n_bytes = [], [], []
        for path in shard_paths(folder):
            for batch in read_shard(path, token_doc(vocab)).to_batches():
                offsets, values = _list_buffers(batch.column("tokens"))
                where.append(np.stack([np.full(batch.num_rows, len(self.batches)), np.arange(batch.num_rows)], 1))
                self.batches.append((offsets, values))
                ids += batch.column("id").to_pylist()
                lengths.append(np.diff(offsets))
                n_bytes.append(batch.column("n_bytes").to_numpy())
        self.where = np.concatenate(where) if where else np.empty((0, 2), dtype=np.int64)
        self.lengths = np.concatenate(lengths) if lengths else np.empty(0, dtype=np.int64)
        self.n_bytes = np.concatenate(n_bytes) if n_bytes else np.empty(0, dtype=np.int64)
        self.is_val = split_is_val(ids, cfg.split_salt, cfg.val_fraction)
        self.ids = ids

    def streams(self, val: bool, eot: int):
        """The documents of one split, batch by batch, joined by end-of-text (shard order)."""
        start = 0
        for offsets, values in self.batches:
            chosen = self.is_val[start : start + len(offsets) - 1] == val
            start += len(offsets) - 1
            if chosen.any():
                yield join_documents(offsets, values, chosen, eot)

    def join(self, docs: np.ndarray, eot: np.ndarray) -> np.ndarray:
        """The documents given (indices), each followed by `eot` (a one-token array)."""
        parts = []
        for b, row in self.where[docs]:
            offsets, values = self.batches[b]
            parts += [values[offsets[row] : offsets[row + 1]], eot]
        return np.concatenate(parts)


def _decontaminator(cfg: ChunkConfig, docs: _Documents, evaluation: EvaluateConfig | None, tok, vocab, eot):
    decon = Decontaminator(cfg.decontaminate, vocab, eot, tok.decode)
    decon.add_set(VALIDATION, docs.streams(val=True, eot=eot))
    for name, texts in (evaluation_texts(evaluation) if evaluation is not None else {}).items():
        encoded = tok.encode_batch_fast(texts, add_special_tokens=False)  # as the tokenize stage encodes
        decon.add_set(name, (np.array(e.ids, dtype=np.int64) for e in encoded))
    decon.freeze()
    for stream in docs.streams(val=False, eot=eot):
        decon.count(stream)
    return decon


def run_chunk(
    cfg: ChunkConfig,
    tokens: ArtifactRef,
    ws: Workspace,
    progress: Progress = NullProgress(),
    evaluation: EvaluateConfig | None = None,
    key: StageKey | None = None,
) -> ArtifactRef:
    """Split and pack a tokenize artifact. `evaluation`: the evaluation sets to decontaminate
    training against, besides the validation documents (None: those alone). `key`: computed
    already (`chunk_key`)."""
    key = key or _key(cfg, tokens, evaluation)
    fp = key.fingerprint
    with ws.build(STAGE, fp, config=key.config, inputs=key.inputs) as build:
        if build.published:
            return build.ref
        tok = load_tokenizer(tokens.dir / TOKENIZER_FILE)
        vocab, eot = vocab_size(tok), tok.token_to_id(END_OF_TEXT)
        shutil.copyfile(tokens.dir / TOKENIZER_FILE, build.dir / TOKENIZER_FILE)

        docs = _Documents(cfg, tokens.dir / TOKENS_DIR, vocab)
        decon = _decontaminator(cfg, docs, evaluation, tok, vocab, eot) if cfg.decontaminate.enabled else None
        progress.start(len(docs.ids), "documents")
        stats = {}
        for split in SPLITS:
            packer = GroupPacker(BlockPacker(build.dir / split, cfg.seq_len, cfg.blocks_per_shard, vocab))
            eot_token = np.array([eot], dtype=packer.packer.dtype)
            members = np.flatnonzero(docs.is_val == (split == "val"))
            tokens_packed = 0
            for group in document_groups([docs.ids[i] for i in members], docs.lengths[members], _group_tokens(cfg)):
                group = members[group]
                stream = docs.join(group, eot_token)
                if decon is not None and split == "train":
                    stream = decon.cut(stream, lambda i, group=group: docs.ids[group[i]])
                packer.add(stream)
                tokens_packed += len(stream)
                progress.advance(len(group))
            packer.close()
            stats[split] = {
                "documents": len(members),
                "tokens": tokens_packed,  # with one end-of-text after each document (and piece)
                "blocks": packer.packer.blocks,
                "tail_tokens": packer.packer.tail_tokens,
                "shards": packer.packer.shards,
                "bytes": int(docs.n_bytes[members].sum()),  # of the documents' text, before any cut
                "groups": packer.groups,
                "leftover_blocks": packer.leftover_blocks,
            }

        if stats["train"]["blocks"] == 0:
            t = stats["train"]
            raise EmptySplitError(
                f"the train split holds {t['documents']} documents and {t['tokens']} tokens, less than one block of "
                f"seq_len + 1 = {cfg.seq_len + 1} tokens: add documents, lower chunk.seq_len or chunk.val_fraction"
            )
        build.stats = stats | {
            "rows": stats["train"]["blocks"] + stats["val"]["blocks"],
            "seq_len": cfg.seq_len,
            "vocab_size": vocab,
            "dtype": str(np.dtype(packer.packer.dtype)),
            "end_of_text_id": eot,
        }
        if decon is not None:
            build.stats["decontaminate"] = decon.report()
    return build.ref


def _group_tokens(cfg: ChunkConfig) -> int:
    return cfg.group_blocks * (cfg.seq_len + 1)
