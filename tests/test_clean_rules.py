"""The clean stage's document rules: quality (Gopher/C4) and language (PII scrubbing: test_clean_pii.py).

Each quality rule gets a crafted document that breaks it: alone, with Gopher's threshold, the
rule rejects it and names the measured value; a good document passes it.
"""

import random

import pytest

from lm_core.clean.language import check_language
from lm_core.clean.quality import QUALITY_REASONS, check_quality
from lm_core.config import LanguageConfig, QualityConfig

GOOD = """\
The lighthouse keeper kept a careful log of every ship that passed the rocky point.
Most entries were brief, but during the storms of early winter they grew long and anxious.

Visitors rarely came, although a supply boat arrived every second Tuesday with flour,
lamp oil and a bundle of newspapers that were always at least a week old.
He read them slowly, saving the crossword for the evenings when the wind was loudest.

Over the years he learned to predict the weather from the colour of the morning sky
and the behaviour of the gulls, which gathered on the eastern cliffs before rain.
His notebooks, now kept in the town museum, describe those signs in patient detail.

When the light was finally automated, he moved to a small cottage near the harbour.
Children from the village would ask him about shipwrecks, and he answered honestly:
there had been only two, and in both cases every sailor had been brought safely ashore.
"""

_VOCAB = (
    "river stone garden window market letter summer paper engine forest bridge candle "
    "silver orange pencil ladder kitchen winter harbor island planet rocket violin castle "
    "meadow thunder blanket mirror pillow tunnel basket jacket wallet button ribbon anchor "
    "compass lantern marble saddle barrel needle cactus falcon walnut copper velvet quarry"
).split()


def prose(n_words: int, seed: int, words_per_line: int = 12) -> str:
    """Word salad from an English vocabulary: no repeated n-grams to speak of."""
    rng = random.Random(seed)
    words = [rng.choice(_VOCAB) for _ in range(n_words)]
    lines = [" ".join(words[i : i + words_per_line]) + "." for i in range(0, n_words, words_per_line)]
    return "\n".join(lines)


def _short_words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(2)) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, n, 10))


def _long_words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(12, 15))) for _ in range(n)]
    return "\n".join(" ".join(words[i : i + 8]) for i in range(0, n, 8))


def _with_numbers(n: int, seed: int) -> str:
    rng = random.Random(seed)
    tokens = [str(rng.randint(100, 99999)) if i % 2 else rng.choice(_VOCAB) for i in range(n)]
    return "\n".join(" ".join(tokens[i : i + 10]) for i in range(0, n, 10))


def _hashtags() -> str:
    lines = prose(200, seed=3, words_per_line=10).split("\n")
    return "\n".join(f"{line} #{_VOCAB[i]}{i} #{_VOCAB[-i - 1]}" for i, line in enumerate(lines))


def _ellipsis_lines() -> str:
    lines = prose(240, seed=4).split("\n")
    return "\n".join(line[:-1] + "..." if i % 2 else line for i, line in enumerate(lines))


def _bullets() -> str:
    return "\n".join("- " + line for line in prose(240, seed=5).split("\n"))


def _repeated_separator_lines() -> str:
    # nine lines in ten are the same "***" separator: words never repeat, lines do
    blocks = [line + "\n***\n***\n***\n***\n***" for line in prose(120, seed=6).split("\n")]
    return "\n".join(blocks)


def _repeated_long_lines() -> str:
    # a few long lines each repeated several times: most characters, not most lines, repeat
    rng = random.Random(7)
    repeated = [", ".join(rng.choice(_VOCAB)[:3] for _ in range(30)) + "." for _ in range(6)]
    unique = prose(60, seed=8, words_per_line=6).split("\n")
    lines = unique[:5] + [line for line in repeated for _ in range(5)] + unique[5:]
    return "\n".join(lines)


def _repeated_short_paragraphs() -> str:
    paragraphs = prose(200, seed=9, words_per_line=20).split("\n")
    out = []
    for i, p in enumerate(paragraphs):
        out.append(p)
        if i < 8:
            out.append("Read more.")
    return "\n\n".join(out)


def _repeated_long_paragraph() -> str:
    long = prose(60, seed=10, words_per_line=60)
    unique = prose(120, seed=11, words_per_line=12).split("\n")
    return "\n\n".join(unique[:5] + [long] + unique[5:] + [long, long])


def _keyword_stuffing() -> str:
    lines = prose(300, seed=12, words_per_line=4).split("\n")
    return "\n".join(f"{line[:-1]} cheap watches." for line in lines)


def _repeated_sentence() -> str:
    sentence = prose(30, seed=13, words_per_line=30)[:-1]
    return "\n".join(f"{word} {sentence}." for word in _VOCAB[:20])


CRAFTED = {
    "min_words": ("A short note with only a dozen words in it, and nothing more.", {}),
    "max_words": (GOOD, {"max_words": 100}),
    "min_mean_word_length": (_short_words(200, seed=1), {}),
    "max_mean_word_length": (_long_words(200, seed=2), {}),
    "max_symbol_word_ratio": (_hashtags(), {}),
    "min_alpha_word_fraction": (_with_numbers(200, seed=1), {}),
    "max_ellipsis_line_fraction": (_ellipsis_lines(), {}),
    "max_bullet_line_fraction": (_bullets(), {}),
    "max_duplicate_line_fraction": (_repeated_separator_lines(), {}),
    "max_duplicate_line_char_fraction": (_repeated_long_lines(), {}),
    "max_duplicate_paragraph_fraction": (_repeated_short_paragraphs(), {}),
    "max_duplicate_paragraph_char_fraction": (_repeated_long_paragraph(), {}),
    "max_top_ngram_char_fraction": (_keyword_stuffing(), {}),
    "max_duplicate_ngram_char_fraction": (_repeated_sentence(), {}),
}


def test_every_rule_has_a_crafted_document():
    assert set(CRAFTED) == set(QUALITY_REASONS)


def test_a_good_paragraph_rich_document_passes_both_profiles():
    for profile in ("docs", "web"):
        assert check_quality(GOOD, QualityConfig(profile=profile)) is None
        assert check_quality(prose(400, seed=0), QualityConfig(profile=profile)) is None


@pytest.mark.parametrize("rule", list(CRAFTED))
def test_each_rule_rejects_the_document_made_to_break_it(rule):
    """With Gopher's thresholds (the web profile), one rule at a time."""
    text, overrides = CRAFTED[rule]
    threshold = getattr(QualityConfig(profile="web", **overrides), rule)
    alone = QualityConfig(profile="web", **{**{name: None for name in QUALITY_REASONS}, rule: threshold})
    rejection = check_quality(text, alone)
    assert rejection is not None and rejection.reason == rule, rejection
    assert any(ch.isdigit() for ch in rejection.detail)  # the measured value is in the detail
    if not overrides:
        assert check_quality(GOOD, alone) is None


def test_the_docs_profile_still_rejects_spam_and_gibberish():
    for rule in ("min_mean_word_length", "max_ellipsis_line_fraction", "max_top_ngram_char_fraction",
                 "max_duplicate_ngram_char_fraction"):  # fmt: skip
        rejection = check_quality(CRAFTED[rule][0], QualityConfig())
        assert rejection is not None and rejection.reason == rule, (rule, rejection)


def test_a_profile_sets_the_thresholds_not_given_and_a_given_one_wins():
    assert QualityConfig().profile == "docs" and QualityConfig().max_bullet_line_fraction is None
    web = QualityConfig(profile="web")
    assert (web.min_words, web.max_duplicate_line_fraction, web.max_bullet_line_fraction) == (50, 0.3, 0.9)
    assert QualityConfig(profile="web", min_words=5).min_words == 5
    assert QualityConfig(profile="web", max_bullet_line_fraction=None).max_bullet_line_fraction is None


def test_rules_measure_prose_and_code_only_counts_toward_length():
    code = "\n".join(f"    value_{i} = compute({i}, {i * 7} + 0x{i:04x})  # {i}" for i in range(60))
    page = f"Each value below is computed once, at import.\n\n```python\n{code}\n```"
    # 60 lines of numbers and symbols: no rule about prose speaks of them, and the page is long enough
    assert check_quality(page, QualityConfig(profile="web", min_words=20)) is None
    assert check_quality(code, QualityConfig(profile="web", min_words=20)) is not None  # unfenced, it is prose
    # the markup the clean stage writes is not words: heading marks, bullets, table bars
    rows = "\n".join(f"| {w} | {w.upper()} |" for w in ("rising", "falling", "slack", "spring", "neap") * 8)
    table = f"## Tides\n\n- kinds\n- names\n\n| kind | name |\n| --- | --- |\n{rows}"
    alpha = QualityConfig(profile="web", **{**{name: None for name in QUALITY_REASONS}, "min_alpha_word_fraction": 0.8})
    assert check_quality(table, alpha) is None  # counted as words, the bars alone would be 3 tokens in 5


def test_all_rules_off_accepts_anything():
    off = QualityConfig(**{name: None for name in QUALITY_REASONS})
    assert check_quality("", off) is None
    assert check_quality("*** *** ***", off) is None


def test_rules_detail_names_value_and_threshold():
    rejection = check_quality("too short", QualityConfig())
    assert rejection.reason == "min_words"
    assert rejection.detail == "2 words < 20"


# ----------------------------------------------------------------------------- language

GERMAN = (
    "Der Leuchtturmwärter führte ein sorgfältiges Logbuch über jedes Schiff, das die felsige "
    "Landzunge passierte. Die meisten Einträge waren kurz, doch während der Stürme im frühen "
    "Winter wurden sie lang und besorgt. Besucher kamen selten, obwohl jeden zweiten Dienstag "
    "ein Versorgungsboot mit Mehl, Lampenöl und einem Bündel alter Zeitungen ankam."
)


def test_language_filter_off_identifies_nothing():
    assert check_language(GERMAN, LanguageConfig()) == (None, None)


def test_language_filter_keeps_listed_languages_and_records_the_code():
    guess, refusal = check_language(GOOD, LanguageConfig(keep=["en"]))
    assert refusal is None and guess.code == "en" and guess.score > 0.9


def test_language_filter_drops_other_languages():
    guess, refusal = check_language(GERMAN, LanguageConfig(keep=["en", "fr"]))
    assert guess.code == "de"
    assert refusal.startswith("de (")
    assert check_language(GERMAN, LanguageConfig(keep=["de"]))[1] is None


def test_language_filter_drops_low_confidence():
    guess, refusal = check_language(GOOD, LanguageConfig(keep=["en"], min_score=1.0))
    if guess.score < 1.0:  # a probability that rounds to exactly 1.0 cannot be below it
        assert "score" in refusal


def _reference_ngram_fractions(words: list[str], chars: int, n: int) -> tuple[float, float]:
    """The two n-gram rules as Gopher's appendix states them, on tuples of words."""
    from collections import Counter

    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    top = 0.0
    if grams:
        gram, times = Counter(grams).most_common(1)[0]  # ties: the n-gram seen first
        top = sum(map(len, gram)) * times / chars if times > 1 else 0.0
    seen, covered, i = set(), 0, 0
    while i < len(grams):
        if grams[i] in seen:
            covered += sum(map(len, grams[i]))
            i += n
        else:
            seen.add(grams[i])
            i += 1
    return top, covered / chars


def test_ngram_statistics_match_their_definition():
    """The n-gram rules count with integer ids in numpy; what they measure is still the
    definition's, ties and overlapping repeats included."""
    from lm_core.clean.quality import TextStats, duplicate_ngram_char_fraction, top_ngram_char_fraction

    rng = random.Random(7)
    vocabulary = ["a", "bb", "ccc", "dddd", "the", "of", "repeat", "x"]
    texts = [" ".join(rng.choice(vocabulary[:k]) for _ in range(rng.randint(0, 300))) for k in (2, 3, 5, 8) * 10]
    texts += ["one two three " * 40, "alpha beta gamma delta epsilon zeta eta theta iota kappa", ""]
    for text in texts:
        stats = TextStats(text)
        for n in range(2, 11):
            top, duplicate = _reference_ngram_fractions(stats.words, stats.chars, n)
            assert top_ngram_char_fraction(stats, n) == top, (text[:30], n)
            assert duplicate_ngram_char_fraction(stats, n) == duplicate, (text[:30], n)


def test_markup_is_taken_out_as_defined():
    """The prose the rules read loses the clean stage's markup, each mark (with the indent before a
    line's) made a space: heading marks and list markers where a line starts, before a space; and
    table bars between spaces. Two fast patterns do what one line-anchored pattern defines."""
    import re

    from lm_core.clean.quality import TextStats

    definition = re.compile(r"^[ \t]*(?:#{1,6}|[-*+]|\d{1,3}[.)])(?= )|(?<!\S)\|(?!\S)", re.M)
    pieces = ["# ", "#x ", "####### ", "  - ", "\t* ", "+", "12) ", "123. ", "1234. ", "3.14 ", "-"]
    pieces += ["| ", " |", "|x", "a|b", "- | ", "|", "word ", "\n", "\n\n", " ", "x"]
    rng = random.Random(3)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    texts += ["| kind | name |\n| --- | --- |\n- a\n1. b\n## c", "|", "-|x", "x |y", "a\n\n|\n"]
    for text in texts:
        assert TextStats(text).plain == definition.sub(" ", text), repr(text)


def test_word_tests_match_their_definition():
    """Words are tokens holding something other than punctuation (ASCII's or Unicode's P
    categories); the alphabetic share counts tokens holding a letter."""
    import string
    import unicodedata

    from lm_core.clean.quality import TextStats, _tokens_with_a_letter

    tokens = ["word", "...", "«»", "—", "a-b", "§", "$5", "²", "ǅ", "漢字", "...x", "¿?", "--", "_", "é.", "(1)", "»x«"]
    for text in (" ".join(tokens), " ".join(t for t in tokens if t.isascii())):
        stats = TextStats(text)

        def punctuation(c: str) -> bool:
            return c in string.punctuation or unicodedata.category(c).startswith("P")

        expected = [t for t in stats.tokens if not all(map(punctuation, t))]
        assert stats.words == expected
        assert _tokens_with_a_letter(stats) == sum(1 for t in stats.tokens if any(c.isalpha() for c in t))
