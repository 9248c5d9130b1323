"""Exact and near-duplicate detection.

Per document (in the parallel map phase) we compute two small fingerprints of its text:

* `exact_digest`: a hash of the text lowercased, punctuation stripped and whitespace collapsed,
  so copies that differ only in case, spacing or punctuation collide;
* `minhash_signature`: a MinHash over word shingles of that same normalised text (datasketch,
  fixed seed, so signatures are the same in every process and every run).

`Deduplicator` then takes the fingerprints of every document in a fixed order and keeps the
first of each group: a later document whose digest was seen, or whose estimated Jaccard
similarity to a kept document reaches the threshold, is a duplicate of that kept document. The
candidates are found by LSH banding as datasketch's MinHashLSH would (same bands and rows), but
each band is held as one 64-bit key and only buckets with two or more documents are kept, so the
index is about 90 bytes per document rather than MinHashLSH's 4.5 KB, and the full signatures are
read back only for the documents that share a bucket. Only kept documents are candidates, so
every duplicate points at a document that is in the output.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from lm_core.config import DedupConfig

SEED = 1  # fixed: a signature must not depend on the process that computed it
SCHEME = "affine32"
DIGEST_BYTES = 16
_SHINGLE_BATCH = 4096  # bounds update_batch's (num_perm x shingles) work array

_NOT_WORD_OR_SPACE = re.compile(r"[^\w\s]+")


def normalized_words(text: str) -> list[str]:
    """Lowercased words with punctuation stripped."""
    return _NOT_WORD_OR_SPACE.sub("", text.casefold()).split()


def exact_digest(words: list[str]) -> bytes:
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=DIGEST_BYTES).digest()


def _hashed(value: int) -> int:
    return value  # the shingles come hashed already (`shingle_hashes`)


@lru_cache(maxsize=8)
def _empty_minhash(num_perm: int) -> MinHash:
    # drawing the permutations is the costly part of a MinHash; copies share the drawn ones
    return MinHash(num_perm=num_perm, seed=SEED, scheme=SCHEME, hashfunc=_hashed)


def shingle_hashes(words: list[str], k: int) -> list[int]:
    """datasketch's default hash (sha1_hash32: the first 4 bytes of SHA-1, little-endian) of each
    `k`-word shingle, its words joined by a space in UTF-8; a text shorter than one shingle is a
    single shingle. The words are joined and encoded once; each shingle is a slice of that."""
    text = " ".join(words)
    data = text.encode("utf-8")
    sizes = map(len, words) if len(data) == len(text) else (len(w.encode("utf-8")) for w in words)
    starts = list(accumulate((size + 1 for size in sizes), initial=0))  # word i starts at starts[i]
    n = len(words)
    ends = [after - 1 for after in starts[k:]] if n >= k else [starts[n] - 1]  # after its last word
    starts[0] = min(starts[0], ends[0])  # no word at all: one empty shingle
    sha1, view = hashlib.sha1, memoryview(data)  # (slices of a memoryview are not copies)
    digests = b"".join([sha1(view[start:end]).digest()[:4] for start, end in zip(starts, ends, strict=False)])
    return np.frombuffer(digests, dtype="<u4").tolist()


def minhash_signature(words: list[str], num_perm: int, shingle_words: int) -> np.ndarray:
    """MinHash (uint64 array of num_perm values) of the set of `shingle_words`-word shingles;
    a text shorter than one shingle is a single shingle."""
    m = _empty_minhash(num_perm).copy()
    hashes = shingle_hashes(words, shingle_words)
    for start in range(0, len(hashes), _SHINGLE_BATCH):
        m.update_batch(hashes[start : start + _SHINGLE_BATCH])
    return np.asarray(m.hashvalues, dtype=np.uint64)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


def lsh_shape(cfg: DedupConfig) -> tuple[int, int]:
    """(bands, rows per band) for the threshold: datasketch's own choice (MinHashLSH's default
    weights of false positives and negatives), so the candidates are those its LSH proposes."""
    return _optimal_param(cfg.threshold, cfg.num_perm, 0.5, 0.5)


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it permutes the 64-bit integers
_SHIFT = np.uint64(29)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: the `rows` values of each band of each signature folded into one key.
    Equal bands give equal keys; unequal bands the same key only by a 64-bit collision, which adds
    a candidate that the comparison of the signatures then judges like any other."""
    values = np.ascontiguousarray(signatures[:, : bands * rows], dtype=np.uint64).reshape(-1, bands, rows)
    keys = np.zeros(values.shape[:2], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):  # each step is a bijection of the key, given the value
            keys = (keys ^ values[:, :, j]) * _MIX
            keys ^= keys >> _SHIFT
    return keys


@dataclass(frozen=True)
class Duplicate:
    reason: str  # "duplicate" (same normalised text) or "near_duplicate"
    of: int  # position of the kept document it duplicates


class Deduplicator:
    """Decides which documents duplicate one kept before them, from fingerprints given in order.

    It holds 16 bytes of digest and 8 bytes of key per LSH band of each document, then 4 bytes of
    bucket number per band in their place (about 90 bytes with the defaults), where datasketch's
    MinHashLSH holds about 4.5 KB per kept document (a Python set per bucket, a bytes object per
    band), so the index stays small as the corpus grows. Full signatures are asked for only for
    the documents that share a bucket with another (`compared`): nothing else can be a
    near-duplicate or have one.

        dedup.add(digests, signatures)        # batch after batch, in order
        dropped = dedup.duplicates(signature_of_position)  # for the positions in dedup.compared()
    """

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self.bands, self.rows = lsh_shape(cfg) if cfg.near else (0, 0)
        self._digests: list[np.ndarray] = []  # per batch, (k, 2) uint64
        self._keys: list[np.ndarray] = []  # per batch, (k, bands) uint64
        self._buckets: np.ndarray | None = None  # (n, bands) bucket number, -1: alone in it

    def add(self, digests: list[bytes], signatures: np.ndarray | None) -> None:
        """The next documents: their exact digests and, with near-dedup on, their signatures
        ((k, num_perm) array)."""
        self._digests.append(np.frombuffer(b"".join(digests), dtype="<u8").reshape(-1, 2))
        if self.bands:
            if signatures is None or len(signatures) != len(digests):
                raise ValueError("near-dedup needs one MinHash signature per document")
            self._keys.append(band_keys(signatures, self.bands, self.rows))

    def compared(self) -> np.ndarray:
        """Positions of the documents whose signatures `duplicates` reads: those that share an LSH
        bucket with another document."""
        return np.flatnonzero(self._compared_mask())

    def _compared_mask(self) -> np.ndarray:
        buckets = self._shared_buckets()
        if buckets is None:
            return np.zeros(sum(map(len, self._digests)), dtype=bool)
        return (buckets >= 0).any(axis=1)

    def _shared_buckets(self) -> np.ndarray | None:
        if not self.bands:
            return None
        if self._buckets is None:
            keys = _stack(self._keys, (0, self.bands), np.uint64)
            self._buckets = np.full(keys.shape, -1, dtype=np.int32)
            for band in range(keys.shape[1]):
                _, bucket, size = np.unique(keys[:, band], return_inverse=True, return_counts=True)
                shared = size[bucket] > 1
                self._buckets[shared, band] = bucket[shared]
            self._keys = []
        return self._buckets

    def duplicates(self, signature: Callable[[int], np.ndarray]) -> dict[int, Duplicate]:
        """Position -> what it duplicates, for every document that is not kept. Document after
        document, the first of each group is kept: a document whose digest an earlier one has is
        what that one is (a duplicate of it if it was kept); one whose estimated Jaccard
        similarity to a kept document reaches the threshold duplicates the earliest such kept
        document (candidates: the kept documents that share a bucket with it)."""
        digests = _stack(self._digests, (0, 2), np.uint64)
        if self.cfg.exact and len(digests):
            _, first_index, group = np.unique(digests, axis=0, return_index=True, return_inverse=True)
            first = first_index[group.reshape(-1)]
        else:
            first = np.arange(len(digests))
        buckets, compared = self._shared_buckets(), self._compared_mask()
        kept_in: dict[tuple[int, int], list[int]] = {}  # (band, bucket) -> kept positions, in order
        dropped: dict[int, Duplicate] = {}
        for i in range(len(digests)):
            if first[i] != i:  # the same text as an earlier document: it ends as that one did
                dropped[i] = dropped.get(int(first[i]), Duplicate("duplicate", int(first[i])))
                continue
            if not compared[i]:
                continue
            shared = [(band, int(b)) for band, b in enumerate(buckets[i]) if b >= 0]
            match = self._earliest_similar(i, sorted({k for key in shared for k in kept_in.get(key, ())}), signature)
            if match is not None:
                dropped[i] = Duplicate("near_duplicate", match)
                continue
            for key in shared:
                kept_in.setdefault(key, []).append(i)
        return dropped

    def _earliest_similar(self, i: int, candidates: list[int], signature: Callable[[int], np.ndarray]) -> int | None:
        if not candidates:
            return None
        mine = signature(i)
        return next((k for k in candidates if estimated_jaccard(mine, signature(k)) >= self.cfg.threshold), None)


def _stack(parts: list[np.ndarray], empty_shape: tuple[int, int], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(empty_shape, dtype=dtype)
