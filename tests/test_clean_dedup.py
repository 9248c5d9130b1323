"""Exact and near-duplicate detection: the first document is kept, later copies point at it."""

import random

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from lm_core.clean.dedup import (
    SCHEME,
    SEED,
    Deduplicator,
    estimated_jaccard,
    exact_digest,
    minhash_signature,
    normalized_words,
)
from lm_core.config import DedupConfig

_VOCAB = (
    "river stone garden window market letter summer paper engine forest bridge candle silver orange "
    "pencil ladder kitchen winter harbor island planet rocket violin castle meadow thunder blanket "
    "mirror pillow tunnel basket jacket wallet button ribbon anchor compass lantern marble saddle"
).split()


def article(seed: int, n_words: int = 400) -> str:
    rng = random.Random(seed)
    words = [rng.choice(_VOCAB) for _ in range(n_words)]
    return "\n".join(" ".join(words[i : i + 12]) + "." for i in range(0, n_words, 12))


def with_words_changed(text: str, n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = text.split(" ")
    for i in rng.sample(range(len(words)), n):
        words[i] = "zeppelin"
    return " ".join(words)


def fingerprints(texts: list[str], cfg: DedupConfig) -> tuple[list[bytes], np.ndarray | None]:
    words = [normalized_words(text) for text in texts]
    digests = [exact_digest(w) for w in words]
    if not cfg.near:
        return digests, None
    return digests, np.array([minhash_signature(w, cfg.num_perm, cfg.shingle_words) for w in words]).reshape(
        len(texts), cfg.num_perm
    )


def decide(digests: list[bytes], signatures: np.ndarray | None, cfg: DedupConfig, batch: int = 2) -> list:
    """Deduplicate in order, handed over `batch` documents at a time; None for kept, else
    (reason, position of the kept document)."""
    dedup = Deduplicator(cfg)
    for start in range(0, len(digests), batch):
        dedup.add(digests[start : start + batch], None if signatures is None else signatures[start : start + batch])
    compared = set(dedup.compared().tolist())

    def signature(position: int) -> np.ndarray:
        assert position in compared, "a signature was read that compared() did not ask for"
        return signatures[position]

    dropped = dedup.duplicates(signature)
    return [(dropped[i].reason, dropped[i].of) if i in dropped else None for i in range(len(digests))]


def run(texts: list[str], cfg: DedupConfig = DedupConfig()) -> list[tuple[str, str] | None]:
    """Deduplicate texts in order (ids are "d0", "d1", ...); None for kept, else (reason, kept id)."""
    return [None if d is None else (d[0], f"d{d[1]}") for d in decide(*fingerprints(texts, cfg), cfg)]


def datasketch_reference(digests: list[bytes], signatures: np.ndarray, cfg: DedupConfig) -> list:
    """The same decisions taken one document at a time with datasketch's MinHashLSH."""
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    by_digest: dict[bytes, int] = {}
    out: list = []
    for i, (digest, signature) in enumerate(zip(digests, signatures, strict=True)):
        if digest in by_digest:
            out.append(("duplicate", by_digest[digest]))
            continue
        lean = LeanMinHash(seed=SEED, hashvalues=signature, scheme=SCHEME)
        similar = [k for k in sorted(lsh.query(lean)) if estimated_jaccard(signature, signatures[k]) >= cfg.threshold]
        if similar:
            out.append(("near_duplicate", similar[0]))
            continue
        by_digest[digest] = i
        lsh.insert(i, lean, check_duplication=False)
        out.append(None)
    return out


def test_distinct_documents_are_all_kept():
    assert run([article(seed) for seed in range(5)]) == [None] * 5


def test_exact_duplicates_after_case_whitespace_and_punctuation_changes():
    a = article(1)
    shouty = a.upper()
    spaced = "  " + a.replace(" ", "   \t").replace("\n", "\n\n") + "\n"
    unpunctuated = a.replace(".", "").replace(",", "")
    assert run([a, shouty, spaced, unpunctuated]) == [
        None,
        ("duplicate", "d0"),
        ("duplicate", "d0"),
        ("duplicate", "d0"),
    ]


def test_a_page_with_a_few_words_changed_is_a_near_duplicate():
    a = article(2)
    assert run([a, article(3), with_words_changed(a, 3)]) == [None, None, ("near_duplicate", "d0")]


def test_near_duplicates_point_at_the_first_kept_document():
    a = article(4)
    copies = [with_words_changed(a, 2, seed=s) for s in range(3)]
    assert run([article(5), a, *copies]) == [None, None] + [("near_duplicate", "d1")] * 3


def test_a_rewritten_page_is_not_a_near_duplicate():
    a = article(6)
    half = a[: len(a) // 2] + article(7)[len(a) // 2 :]
    assert run([a, half]) == [None, None]


def test_switches():
    a = article(8)
    near = with_words_changed(a, 3)
    assert run([a, a.upper(), near], DedupConfig(exact=False)) == [
        None,
        ("near_duplicate", "d0"),
        ("near_duplicate", "d0"),
    ]
    assert run([a, a.upper(), near], DedupConfig(near=False)) == [None, ("duplicate", "d0"), None]
    assert run([a, a.upper(), near], DedupConfig(exact=False, near=False)) == [None, None, None]


def test_threshold_decides():
    a = article(9)
    changed = with_words_changed(a, 12)
    similarity = estimated_jaccard(
        minhash_signature(normalized_words(a), 128, 5), minhash_signature(normalized_words(changed), 128, 5)
    )
    assert 0.3 < similarity < 0.95
    assert run([a, changed], DedupConfig(threshold=similarity - 0.1)) == [None, ("near_duplicate", "d0")]
    assert run([a, changed], DedupConfig(threshold=min(similarity + 0.1, 1.0))) == [None, None]


def test_signatures_are_fixed_by_seed_and_handle_short_texts():
    words = normalized_words(article(10))
    first = minhash_signature(words, 64, 5)
    assert first.dtype == np.uint64 and first.shape == (64,)
    assert np.array_equal(first, minhash_signature(list(words), 64, 5))
    short = minhash_signature(["two", "words"], 64, 5)  # shorter than one shingle: still a signature
    assert short.shape == (64,) and not np.array_equal(short, minhash_signature([], 64, 5))


def test_normalisation():
    assert normalized_words("Hello,   WORLD!\n\tIt's  fine.") == ["hello", "world", "its", "fine"]


def test_signatures_are_datasketchs_minhash_of_the_shingles():
    """The shingles are hashed in bulk (one encoded string, a slice per shingle), but the
    signature is the one datasketch computes from each shingle with its default hash: signatures
    stored by earlier builds stay comparable."""
    from datasketch import MinHash

    def reference(words: list[str], k: int) -> np.ndarray:
        m = MinHash(num_perm=64, seed=SEED, scheme=SCHEME)
        count = max(len(words) - k + 1, 1)
        m.update_batch([" ".join(words[i : i + k]).encode("utf-8") for i in range(count)])
        return np.asarray(m.hashvalues, dtype=np.uint64)

    texts = [article(3), "ünïcödé wörds — and ascii ones, ß 漢字 again ünïcödé", "two words", ""]
    for text in texts:
        words = normalized_words(text)
        for k in (1, 3, 5):
            assert np.array_equal(minhash_signature(words, 64, k), reference(words, k)), (text[:20], k)


def test_decisions_are_those_of_datasketchs_lsh_taken_one_by_one():
    """The compact index (64-bit band keys, signatures read back only for shared buckets) drops
    exactly what datasketch's MinHashLSH, queried and filled document after document, drops:
    chains (b near a, c near b but not a: c is kept), exact copies of a dropped document, and
    documents that share a bucket but fall under the threshold."""
    rng = random.Random(0)
    texts = [article(100 + i) for i in range(6)]
    for _ in range(60):
        base = rng.choice(texts)
        texts.append(rng.choice([with_words_changed(base, rng.randint(1, 25), seed=rng.randint(0, 99)), base.upper()]))
    cfg = DedupConfig()
    digests, signatures = fingerprints(texts, cfg)
    got = decide(digests, signatures, cfg, batch=7)
    assert got == datasketch_reference(digests, signatures, cfg)
    reasons = [d[0] for d in got if d is not None]
    assert reasons.count("near_duplicate") > 10 and reasons.count("duplicate") > 5 and got.count(None) > 6


def test_only_documents_sharing_a_bucket_are_compared():
    cfg = DedupConfig()
    a = article(20)
    digests, signatures = fingerprints([a, article(21), with_words_changed(a, 2), article(22)], cfg)
    dedup = Deduplicator(cfg)
    dedup.add(digests, signatures)
    assert dedup.compared().tolist() == [0, 2]
