"""Rendered chats -> (B, T) training tensors for the GPT: padded, packed, and preference pairs.

For every row, `targets[t] = ids[t + 1]` (next-token prediction) and `loss_mask[t]` is the
rendered chat's mask of that target token, so a chat of n tokens fills n - 1 positions: a model
of context T takes chats of up to T + 1 tokens. Render them with `max_len = T + 1`.

Padding goes on the right and needs no attention mask: the GPT is causal, so a real token
attends only to the tokens before it and never sees the padding after it; padded positions
produce logits that `loss_mask` (False there) keeps out of the loss. Padded `idx` and `targets`
hold `pad_id`, a valid id, so gathers on them (DPO log-probabilities) need no special case;
always pass `loss_mask` to the loss.

Packing puts several chats in one row, each followed by `<|endoftext|>` as in pretraining.
Within a row a chat can attend to the chats packed before it, as nanochat's and most SFT
packers allow: the masked loss still counts each assistant token once, and the context it
leaks is unrelated text the model learns to ignore after an end-of-text. `doc_ids` says which
chat each position belongs to, for a model that prefers block-diagonal attention
(`doc_ids[:, :, None] == doc_ids[:, None, :]` and causal).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from lm_core.tokenize.chat_template import RenderedChat


class Batch(NamedTuple):
    idx: torch.Tensor  # (B, T) int64 input ids
    targets: torch.Tensor  # (B, T) int64 next ids
    loss_mask: torch.Tensor  # (B, T) bool, True where a target is learned


class PackedBatch(NamedTuple):
    idx: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    doc_ids: torch.Tensor  # (B, T) int64: index of the chat (in the input list) at each position; -1 padding


class PreferenceBatch(NamedTuple):
    """Chosen and rejected sides, row i of each from the same prompt, padded to the same T."""

    chosen: Batch
    rejected: Batch

    def stacked(self) -> Batch:
        """One (2B, T) batch, chosen rows first: both sides in one forward pass."""
        return Batch(*(torch.cat([c, r]) for c, r in zip(self.chosen, self.rejected, strict=True)))


def _check_fits(rendered: Sequence[RenderedChat], max_len: int) -> None:
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, is {max_len}")
    for i, r in enumerate(rendered):
        if len(r.ids) != len(r.loss_mask):
            raise ValueError(
                f"chat {i} ({r.origin or 'no origin'}): {len(r.ids)} ids but {len(r.loss_mask)} mask values"
            )
        if len(r.ids) > max_len + 1:
            raise ValueError(
                f"chat {i} ({r.origin or 'no origin'}) has {len(r.ids)} tokens, more than max_len + 1 = {max_len + 1}: "
                f"render it with max_len={max_len + 1}"
            )


def _fill(rows: list[tuple[list[int], list[int], list[int]]], width: int, pad_id: int) -> PackedBatch:
    """Rows of (ids, mask, doc) as shifted, right-padded tensors of `width` positions."""
    idx = np.full((len(rows), width), pad_id, dtype=np.int64)
    targets = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    docs = np.full((len(rows), width), -1, dtype=np.int64)
    for b, (ids, m, doc) in enumerate(rows):
        n = max(len(ids) - 1, 0)
        idx[b, :n] = ids[:-1]
        targets[b, :n] = ids[1:]
        mask[b, :n] = m[1:]
        docs[b, :n] = doc[:-1]
    return PackedBatch(*(torch.from_numpy(a) for a in (idx, targets, mask, docs)))


def pad_batch(rendered: Sequence[RenderedChat], max_len: int, pad_id: int, *, fixed_length: bool = False) -> Batch:
    """One chat per row. T is the longest chat's length - 1, or `max_len` with `fixed_length`
    (constant shapes, for compiled models)."""
    if not rendered:
        raise ValueError("pad_batch needs at least one chat")
    _check_fits(rendered, max_len)
    width = max_len if fixed_length else max(max(len(r.ids) for r in rendered) - 1, 1)
    rows = [(r.ids, r.loss_mask, [i] * len(r.ids)) for i, r in enumerate(rendered)]
    return Batch(*_fill(rows, width, pad_id)[:3])


def plan_packing(lengths: Sequence[int], max_len: int) -> list[list[int]]:
    """Which chats share a row: first-fit decreasing (deterministic), each chat costing its
    tokens + 1 separator, a row holding `max_len + 2` (the last separator is never an input).
    Returns rows of chat indices, in increasing order within a row."""
    capacity = max_len + 2
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        cost = lengths[i] + 1
        if cost > capacity:
            raise ValueError(f"chat {i} has {lengths[i]} tokens, more than max_len + 1 = {max_len + 1}")
        row = next((r for r, room in enumerate(free) if room >= cost), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= cost
    return [sorted(r) for r in rows]


def pack_batch(rendered: Sequence[RenderedChat], max_len: int, pad_id: int, eot_id: int) -> PackedBatch:
    """All `rendered` chats packed into as few rows of T = `max_len` positions as first-fit
    finds; no chat is split across rows. Each chat is followed by `eot_id` (never learned)."""
    if not rendered:
        raise ValueError("pack_batch needs at least one chat")
    _check_fits(rendered, max_len)
    rows = []
    for members in plan_packing([len(r.ids) for r in rendered], max_len):
        ids: list[int] = []
        mask: list[int] = []
        doc: list[int] = []
        for i in members:
            r = rendered[i]
            ids += [*r.ids, eot_id]
            mask += [*r.loss_mask, 0]
            doc += [i] * (len(r.ids) + 1)
        keep = max_len + 1  # cuts at most the row's last separator, which nothing learns from
        rows.append((ids[:keep], mask[:keep], doc[:keep]))
    return _fill(rows, max_len, pad_id)


def _prompt_length(r: RenderedChat) -> int:
    return next((t for t, m in enumerate(r.loss_mask) if m), len(r.ids))


def preference_batch(
    pairs: Sequence[tuple[RenderedChat, RenderedChat]], max_len: int, pad_id: int, *, fixed_length: bool = False
) -> PreferenceBatch:
    """DPO batches from (chosen, rejected) pairs rendered with `ChatTemplate.render_reply`
    (masks on the reply only). Both sides share T so they can be stacked into one pass."""
    if not pairs:
        raise ValueError("preference_batch needs at least one pair")
    chosen = [c for c, _ in pairs]
    rejected = [r for _, r in pairs]
    _check_fits(chosen + rejected, max_len)
    for i, (c, r) in enumerate(pairs):
        if not c.n_targets or not r.n_targets:
            raise ValueError(f"pair {i} ({c.origin or 'no origin'}): a reply has no tokens left after truncation")
        n = _prompt_length(c)
        if n != _prompt_length(r) or c.ids[:n] != r.ids[:n]:
            raise ValueError(f"pair {i} ({c.origin or 'no origin'}): chosen and rejected do not share one prompt")
    width = max_len if fixed_length else max(max(len(x.ids) for x in chosen + rejected) - 1, 1)

    def side(chats: list[RenderedChat]) -> Batch:
        return Batch(*_fill([(x.ids, x.loss_mask, [0] * len(x.ids)) for x in chats], width, pad_id)[:3])

    return PreferenceBatch(side(chosen), side(rejected))
