"""Decontamination: cut out of training documents every passage they share with an evaluation set.

A passage is shared when a window of `ngram` consecutive tokens of a training document is also
a window of an evaluation text: a validation document (the validation blocks, the held-out
pairs and the held-out chats are all cut from them), a text of `evaluate.texts`/`hf_texts`, or a
prompt or reference of `evaluate.pair_sets`. Every token under such a window is removed; a
document that loses a passage from its middle is split there by an end-of-text, so that no two
pieces that were never adjacent are joined.

Token windows, not GPT-3's lowercased words: the chunk stage holds token ids, the evaluation sets
are encoded with the same tokenizer, and the sets that matter most (validation documents, pairs
and chats cut from them) are the same text, so a copy is the same ids (but at its first and last
token). Windows are hashed and looked up with numpy, and the exact tokens are cut. 13 tokens are
about 50 bytes of text, fewer than 13 words: no looser than GPT-3's rule.

By default every shared window goes, so that no training block shares one with an evaluation set.
With `max_train_docs` set, windows found in more than that many training documents are kept, as
GPT-3 did: they are boilerplate (pydoc's "Methods inherited from builtins.object:" blocks,
licence lines) that a model would learn anyway, and that validation documents hold too. On the
small demo that is the difference between cutting 17.5% of the training tokens and 4.2%.

Memory: per evaluation window (in practice, per validation token), a 64-bit hash in one sorted
array, a document count and a flag per set: about 13 bytes. Training documents are streamed
through twice (counting, then cutting).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from lm_core.config import DecontaminateConfig, EvaluateConfig

VALIDATION = "validation"  # the set of the validation documents
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: a window's hash is a polynomial in it
_EXAMPLES = 3  # removed passages shown per evaluation set
_EXAMPLE_CHARS = 160


def window_hashes(tokens: np.ndarray, n: int, table: np.ndarray, eot: int) -> tuple[np.ndarray, np.ndarray]:
    """The hash of every window of n tokens (entry i: tokens[i:i+n]), and whether the window lies
    inside one document (holds no end-of-text). Each id is first replaced by a random 64-bit
    word, so that windows of different ids collide no more often than random numbers."""
    count = len(tokens) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=bool)
    words = table[tokens]
    h = words[:count].copy()
    for k in range(1, n):
        h *= _MULTIPLIER  # wraps modulo 2**64
        h += words[k : k + count]
    eots = np.concatenate([[0], np.cumsum(tokens == eot)])
    return h, eots[n:] == eots[:count]


def _cover(starts: np.ndarray, n: int, length: int) -> np.ndarray:
    """Tokens under the windows starting at `starts`."""
    edges = np.zeros(length + 1, dtype=np.int32)
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + n, -1)
    return np.cumsum(edges[:-1]) > 0


def _cut(stream: np.ndarray, covered: np.ndarray, eot: int) -> tuple[np.ndarray, int]:
    """(the stream without its covered tokens, documents emptied). A covered run never holds an
    end-of-text; one in a document's middle becomes an end-of-text, one that was a whole document
    takes that document's end-of-text with it (no empty documents are made)."""
    first = np.flatnonzero(covered & ~np.concatenate([[False], covered[:-1]]))
    after = np.flatnonzero(covered & ~np.concatenate([covered[1:], [False]])) + 1
    text_before = (first > 0) & (stream[np.maximum(first - 1, 0)] != eot)
    text_after = (after < len(stream)) & (stream[np.minimum(after, len(stream) - 1)] != eot)
    out, keep = stream.copy(), ~covered
    middle = first[text_before & text_after]
    out[middle], keep[middle] = eot, True
    emptied = after[~text_before & ~text_after]
    keep[emptied[emptied < len(stream)]] = False
    return out[keep], len(emptied)


class _SetReport:
    def __init__(self, ngrams: int):
        self.ngrams, self.documents, self.tokens = ngrams, 0, 0
        self.examples: list[dict[str, str]] = []

    def to_dict(self) -> dict:
        return {"ngrams": self.ngrams, "documents": self.documents, "tokens": self.tokens, "examples": self.examples}


class Decontaminator:
    """Usage: `add_set` for each evaluation set, `freeze`, `count` every training stream, then
    `cut` each training stream before it is packed; `report()` for the manifest."""

    def __init__(self, cfg: DecontaminateConfig, vocab_size: int, eot: int, decode: Callable[[list[int]], str]):
        self.n, self.max_docs, self.eot, self.decode = cfg.ngram, cfg.max_train_docs, eot, decode
        self.table = np.random.default_rng(0x1F0E).integers(0, 2**64, size=vocab_size, dtype=np.uint64)
        self._sets: dict[str, np.ndarray] = {}
        self.totals = {"documents": 0, "tokens": 0, "documents_emptied": 0}

    def add_set(self, name: str, streams: Iterable[np.ndarray]) -> None:
        """An evaluation set, as token streams (texts joined by end-of-text, or one text each)."""
        found = [h[ok] for h, ok in (window_hashes(s, self.n, self.table, self.eot) for s in streams)]
        self._sets[name] = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.uint64)

    def freeze(self) -> None:
        self.hashes = np.unique(np.concatenate([np.empty(0, np.uint64), *self._sets.values()]))
        self.member = {name: np.isin(self.hashes, s) for name, s in self._sets.items()}
        self.doc_counts = np.zeros(len(self.hashes), dtype=np.int32)
        self.reports = {name: _SetReport(len(s)) for name, s in self._sets.items()}
        self._sets.clear()  # `hashes` and `member` hold them now
        self._active: np.ndarray | None = None

    def _hits(self, stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window starts whose window is an evaluation window, that window's index in `hashes`)."""
        h, inside = window_hashes(stream, self.n, self.table, self.eot)
        if not len(self.hashes) or not len(h):
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        starts = np.flatnonzero(inside & (self.hashes[at] == h))
        return starts, at[starts]

    def count(self, stream: np.ndarray) -> None:
        """Training documents joined by end-of-text: how many documents hold each evaluation window."""
        starts, at = self._hits(stream)
        doc = np.cumsum(stream == self.eot)[starts]  # end-of-texts before the window: its document
        pairs = np.unique(np.stack([doc, at]), axis=1)
        windows, documents = np.unique(pairs[1], return_counts=True)
        self.doc_counts[windows] += documents.astype(np.int32)

    def cut(self, stream: np.ndarray, doc_id: Callable[[int], str]) -> np.ndarray:
        """The stream (whole documents, each ended by end-of-text) without the passages it shares
        with the evaluation sets; `doc_id(i)` names its i-th document in the examples."""
        if self._active is None:  # every `count` is done: decide which windows are common text
            limit = self.max_docs if self.max_docs is not None else np.iinfo(np.int32).max
            self._active = self.doc_counts <= limit
        starts, at = self._hits(stream)
        cut = self._active[at]
        starts, at = starts[cut], at[cut]
        if not len(starts):
            return stream
        doc_of = np.cumsum(stream == self.eot)  # a token's document (a document's end-of-text is never covered)
        for name, member in self.member.items():
            mine = member[at]
            if mine.any():
                self._record(self.reports[name], stream, _cover(starts[mine], self.n, len(stream)), doc_of, doc_id)
        covered = _cover(starts, self.n, len(stream))
        self.totals["documents"] += len(np.unique(doc_of[covered]))
        self.totals["tokens"] += int(covered.sum())
        out, emptied = _cut(stream, covered, self.eot)
        self.totals["documents_emptied"] += emptied
        return out

    def _record(self, report: _SetReport, stream, covered, doc_of, doc_id) -> None:
        report.documents += len(np.unique(doc_of[covered]))
        report.tokens += int(covered.sum())
        runs = np.flatnonzero(np.diff(np.concatenate([[0], covered.astype(np.int8), [0]])))
        for first, after in zip(runs[::2], runs[1::2], strict=True):
            if len(report.examples) == _EXAMPLES:
                break
            text = self.decode(stream[first:after].tolist())
            report.examples.append({"document": doc_id(int(doc_of[first])), "text": text[:_EXAMPLE_CHARS]})

    def report(self) -> dict:
        common = int((self.doc_counts > self.max_docs).sum()) if self.max_docs is not None else 0
        return {
            "ngram": self.n,
            "max_train_docs": self.max_docs,
            **self.totals,
            "common_ngrams_kept": common,
            "sets": {name: r.to_dict() for name, r in self.reports.items()},
        }


def evaluation_texts(evaluation: EvaluateConfig) -> dict[str, list[str]]:
    """The texts of the evaluation sets an `EvaluateConfig` names, by set: each text set
    (`text.<name>`) and each pair file's prompts and references (`pairs.<name>`), read as the
    evaluate stage reads them. (The held-out pairs and chats come from validation documents.)"""
    from lm_core.evaluate.pairs import read_pairs  # the evaluation sets: only when decontaminating
    from lm_core.evaluate.sets import pair_set_paths, read_text_sets

    out = {f"text.{name}": docs for name, docs in read_text_sets(evaluation).items()}
    for name, path in pair_set_paths(evaluation).items():
        out[f"pairs.{name}"] = [t for p in read_pairs(path) for t in (p.prompt, p.reference)]
    return out
