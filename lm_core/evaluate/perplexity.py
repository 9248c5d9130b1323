"""How well a model predicts text: mean next-token loss, perplexity and bits-per-byte.

    loss  = total nats / tokens scored           (natural log, as the training loss)
    ppl   = exp(loss)
    bpb   = total nats / ln 2 / UTF-8 bytes of the text scored

Bits-per-byte does not depend on the tokenizer, so models with different vocabularies compare.
The sums and figures are `lm_core.token_loss`'s, which the training loop's validation shares.

Two kinds of text are scored:

- the chunk artifact's validation blocks, exactly as training evaluates them (each block is one
  context of `seq_len` targets); their bytes come from the chunk manifest, scaled by the share
  of the validation split's tokens that were scored;
- any texts: each document tokenized with the model's own tokenizer and followed by
  end-of-text, all joined into one stream that starts with end-of-text (as documents follow one
  another in training), and scored with a sliding window (see `sliding_windows`). Every token of
  every document and each end-of-text is scored exactly once; the bytes are counted exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lm_core.evaluate.errors import EvalSetError
from lm_core.progress import NullProgress, Progress
from lm_core.textgen import TextModel
from lm_core.token_loss import Perplexity, loss_totals
from lm_core.train.loader import BlockStore, eval_batches
from lm_core.workspace import read_manifest

ENCODE_BATCH = 256  # documents per encode_batch call


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- validation blocks


@torch.inference_mode()
def score_blocks(
    model: TextModel,
    split_dir: str | Path,
    batch_size: int,
    max_batches: int | None = None,
    bytes_per_token: float | None = None,
    progress: Progress = NullProgress(),
) -> Perplexity:
    """Loss over the blocks of a chunk split (all, or the first `max_batches` batches);
    `bytes_per_token` (text bytes per token of the split) gives bits-per-byte."""
    blocks = len(BlockStore(split_dir))
    if blocks == 0:
        raise EvalSetError(f"{split_dir} holds no whole block to score")
    batches = math.ceil(blocks / batch_size)
    progress.start(min(batches, max_batches or batches), "validation batches")
    device = _device(model.model)
    totals = loss_totals(model.model, _advancing(eval_batches(split_dir, batch_size, max_batches), progress), device)
    nats, tokens = totals.tolist()
    return Perplexity(nats, int(tokens), tokens * bytes_per_token if bytes_per_token else None)


def score_validation(
    model: TextModel,
    chunk_dir: str | Path,
    batch_size: int,
    max_batches: int | None = None,
    progress: Progress = NullProgress(),
) -> Perplexity:
    """`score_blocks` over a chunk artifact's validation split, bytes from its manifest."""
    chunk_dir = Path(chunk_dir)
    stats = read_manifest(chunk_dir)["stats"]
    val = stats.get("val", {})
    if not val.get("blocks"):
        raise EvalSetError(
            f"the chunk artifact {chunk_dir} has no validation block ({val.get('tokens', 0)} validation tokens, "
            f"blocks of {stats.get('seq_len')} + 1): rebuild it with a larger chunk.val_fraction or a smaller seq_len"
        )
    if stats["seq_len"] > model.context:
        raise EvalSetError(
            f"the chunk artifact's blocks hold {stats['seq_len']} targets, more than the model's context "
            f"({model.context}): evaluate on a chunk made with chunk.seq_len <= {model.context}"
        )
    bytes_per_token = val["bytes"] / val["tokens"] if val.get("tokens") else None
    return score_blocks(model, chunk_dir / "val", batch_size, max_batches, bytes_per_token, progress)


def _advancing(items: Iterable, progress: Progress) -> Iterator:
    for item in items:
        yield item
        progress.advance()


# ----------------------------------------------------------------------------- any text


@dataclass(frozen=True)
class Window:
    """One forward pass: inputs stream[start:end], targets stream[start + 1:end + 1], of which
    only the last `scored` count (the ones no earlier window scored)."""

    start: int
    end: int
    scored: int


def sliding_windows(n_targets: int, window: int, stride: int) -> list[Window]:
    """Hugging Face's "perplexity of fixed-length models": windows of `window` tokens start every
    `stride` tokens; each scores only the targets past the previous window's end. So every target
    is scored exactly once, with at least `window - stride` tokens of left context (the first
    window's targets with what precedes them)."""
    if not 1 <= stride <= window:
        raise EvalSetError(f"the sliding-window stride ({stride}) must lie between 1 and the context ({window})")
    out: list[Window] = []
    prev_end = 0
    for start in range(0, n_targets, stride):
        end = min(start + window, n_targets)
        out.append(Window(start, end, end - prev_end))
        prev_end = end
        if end == n_targets:
            break
    return out


@dataclass(frozen=True)
class TokenStream:
    """Documents as one token stream: end-of-text, doc 1, end-of-text, doc 2, end-of-text, ..."""

    ids: np.ndarray  # int64
    documents: int
    bytes: int  # UTF-8 bytes of the documents' text

    @property
    def targets(self) -> int:
        return len(self.ids) - 1


def token_stream(model: TextModel, texts: Iterable[str]) -> TokenStream:
    parts: list[np.ndarray] = [np.array([model.eos_id], dtype=np.int64)]
    documents = n_bytes = 0
    pending: list[str] = []

    def flush() -> None:
        for enc in model.tokenizer.encode_batch(pending):
            parts.append(np.array(enc.ids + [model.eos_id], dtype=np.int64))
        pending.clear()

    for text in texts:
        documents += 1
        n_bytes += len(text.encode("utf-8"))
        pending.append(text)
        if len(pending) >= ENCODE_BATCH:
            flush()
    flush()
    return TokenStream(np.concatenate(parts), documents, n_bytes)


def window_batches(
    stream: np.ndarray, windows: list[Window], batch_size: int, pad_id: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, y, mask) batches of windows; a shorter (last) window is padded on the right, which a
    causal model never looks at, and its padding is masked out."""
    for i in range(0, len(windows), batch_size):
        group = windows[i : i + batch_size]
        width = max(w.end - w.start for w in group)
        x = np.full((len(group), width), pad_id, dtype=np.int64)
        y = np.zeros((len(group), width), dtype=np.int64)
        mask = np.zeros((len(group), width), dtype=bool)
        for row, w in enumerate(group):
            n = w.end - w.start
            x[row, :n] = stream[w.start : w.end]
            y[row, :n] = stream[w.start + 1 : w.end + 1]
            mask[row, n - w.scored : n] = True
        yield torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(mask)


@torch.inference_mode()
def score_texts(
    model: TextModel,
    texts: Iterable[str],
    batch_size: int,
    stride: int | None = None,
    progress: Progress = NullProgress(),
    name: str = "texts",
) -> Perplexity:
    """Loss of `model` over documents, with a sliding window of the model's context that moves by
    `stride` tokens (default: half the context)."""
    stream = token_stream(model, texts)
    if stream.documents == 0:
        raise EvalSetError(f"the text set {name!r} holds no document")
    window = model.context
    windows = sliding_windows(stream.targets, window, stride or max(1, window // 2))
    progress.start(math.ceil(len(windows) / batch_size), f"{name} batches")
    batches = window_batches(stream.ids, windows, batch_size, model.eos_id)
    totals = loss_totals(model.model, _advancing(batches, progress), _device(model.model))
    nats, tokens = totals.tolist()
    return Perplexity(nats, int(tokens), stream.bytes)
