"""Exact and near-duplicate detection.

Per document (in the parallel map phase) we compute two small fingerprints of its text:

* `exact_digest`: a hash of the text lowercased, punctuation stripped and whitespace collapsed,
  so copies that differ only in case, spacing or punctuation collide;
* `minhash_signature`: a MinHash over word shingles of that same normalised text (datasketch,
  fixed seed, so signatures are the same in every process and every run).

`Deduplicator` then sees the fingerprints one document at a time in a fixed order and keeps the
first of each group: a later document whose digest was seen, or whose estimated Jaccard
similarity to a kept document reaches the threshold (candidates found with MinHashLSH), is a
duplicate of that kept document. Only kept documents enter the index, so every duplicate points
at a document that is in the output.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

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
    ends = [starts[min(i + k, n)] - 1 for i in range(max(n - k + 1, 1))]  # after its last word
    starts[0] = min(starts[0], ends[0])  # no word at all: one empty shingle
    sha1 = hashlib.sha1
    digests = b"".join([sha1(data[start:end]).digest()[:4] for start, end in zip(starts, ends, strict=False)])
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


@dataclass(frozen=True)
class Duplicate:
    reason: str  # "duplicate" (same normalised text) or "near_duplicate"
    of: str  # id of the kept document it duplicates


class Deduplicator:
    """Decides, document after document, which are duplicates of one already kept. Holds only
    fingerprints (a digest and, with near-dedup on, a signature and LSH entries per kept doc)."""

    def __init__(self, cfg: DedupConfig):
        self.cfg = cfg
        self._by_digest: dict[bytes, str] = {}
        self._lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm) if cfg.near else None
        self._kept: list[tuple[str, np.ndarray]] = []  # LSH key (position) -> (id, signature)

    def check(self, doc_id: str, digest: bytes, signature: np.ndarray | None) -> Duplicate | None:
        """None if the document is kept (and remembered), else what it duplicates."""
        if self.cfg.exact:
            first = self._by_digest.get(digest)
            if first is not None:
                return Duplicate("duplicate", first)
        if self._lsh is not None and signature is not None:
            match = self._nearest_kept(signature)
            if match is not None:
                return Duplicate("near_duplicate", match)
        self._remember(doc_id, digest, signature)
        return None

    def _nearest_kept(self, signature: np.ndarray) -> str | None:
        lean = LeanMinHash(seed=SEED, hashvalues=signature, scheme=SCHEME)
        # the earliest kept document that is similar enough (LSH only proposes candidates)
        for key in sorted(self._lsh.query(lean)):
            doc_id, other = self._kept[key]
            if estimated_jaccard(signature, other) >= self.cfg.threshold:
                return doc_id
        return None

    def _remember(self, doc_id: str, digest: bytes, signature: np.ndarray | None) -> None:
        if self.cfg.exact:
            self._by_digest.setdefault(digest, doc_id)
        if self._lsh is not None and signature is not None:
            key = len(self._kept)
            self._kept.append((doc_id, signature))
            self._lsh.insert(key, LeanMinHash(seed=SEED, hashvalues=signature, scheme=SCHEME), check_duplication=False)
