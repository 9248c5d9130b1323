"""Exact and near-duplicate detection: the first document is kept, later copies point at it."""

import random

import numpy as np

from lm_core.clean.dedup import (
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


def run(texts: list[str], cfg: DedupConfig = DedupConfig()) -> list[tuple[str, str] | None]:
    """Deduplicate texts in order (ids are "d0", "d1", ...); None for kept, else (reason, kept id)."""
    dedup = Deduplicator(cfg)
    out = []
    for i, text in enumerate(texts):
        words = normalized_words(text)
        signature = minhash_signature(words, cfg.num_perm, cfg.shingle_words) if cfg.near else None
        dup = dedup.check(f"d{i}", exact_digest(words), signature)
        out.append(None if dup is None else (dup.reason, dup.of))
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

    from lm_core.clean.dedup import SCHEME, SEED

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
