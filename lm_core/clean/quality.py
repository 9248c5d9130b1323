"""Gopher/C4-style document quality rules.

Each rule is named after the `QualityConfig` field holding its threshold; a threshold of None
switches the rule off. `check_quality` returns the first failing rule as a `Rejection` (its
name is the reason recorded in `rejected/`, its detail the measured value and the threshold),
or None when the document passes.

Definitions follow Rae et al. 2021 (Gopher, appendix A) as datatrove implements them:
words are whitespace-separated tokens; words made only of punctuation are not counted as words;
the repetition rules measure characters against the length of the text.

Those rules were made for web prose, so they are measured on a page's prose: fenced code blocks
are taken out (code repeats lines, is short on letters and long on symbols by nature), and so is
the markup the clean stage writes (heading marks, list bullets, table bars). Code still counts
toward a page's length (`min_words`, `max_words`), and a page with too little prose to measure
(under 20 words of it: a page of code with a caption) passes the ratio rules. Headings are not
paragraphs: a changelog repeats "Bugs fixed" under every release.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate

import numpy as np

from lm_core.config import QualityConfig

_BULLETS = ("•", "●", "○", "▪", "◦", "‣", "⁃", "·", "-", "*", "–", "—", "+")
_ELLIPSES = ("...", "…")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# a code block as the clean stage fences it: the same run of backticks opens and closes it
_FENCED_CODE = re.compile(r"^(?P<fence>`{3,})[^\n`]*\n(?P<code>.*?)\n(?P=fence)[ \t]*$", re.M | re.S)
_HEADING = re.compile(r"^#{1,6} ")
# the clean stage's markup, not words: heading marks and list markers where a line starts, and
# table bars between spaces. (Each pattern starts with a literal character, which the regex
# engine skips to at C speed: a line start written as "^" has it try every position.)
_LINE_MARKUP = re.compile(r"\n[ \t]*(?:#{1,6}|[-*+]|\d{1,3}[.)])(?= )")
_TABLE_BAR = re.compile(r"\|(?<!\S\|)(?!\S)")
_MIN_SAMPLE = 20  # prose words below which a ratio says nothing about a page
_RATIO_RULES = frozenset(
    {
        "min_mean_word_length",
        "max_mean_word_length",
        "max_symbol_word_ratio",
        "min_alpha_word_fraction",
        "max_ellipsis_line_fraction",
        "max_bullet_line_fraction",
        "max_duplicate_line_fraction",
        "max_duplicate_line_char_fraction",
        "max_duplicate_paragraph_fraction",
        "max_duplicate_paragraph_char_fraction",
        "max_top_ngram_char_fraction",
        "max_duplicate_ngram_char_fraction",
    }
)


@dataclass(frozen=True)
class Rejection:
    reason: str  # the rule's name, e.g. "min_words"
    detail: str  # measured value against threshold, e.g. "12 words < 50"


# ASCII but letters and whitespace, deleted: what is left of a token is its letters (or nothing)
_ASCII_BUT_LETTERS = {c: None for c in range(128) if not chr(c).isspace() and not chr(c).isalpha()}


def _is_punctuation(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _all_punctuation(token: str) -> bool:
    """Whether every character of `token` is punctuation (ASCII's, or Unicode's P categories).
    Words are most tokens (isalnum), and the ASCII punctuation at a token's ends is stripped in C:
    what is left of an ASCII token is empty, or starts with a character that is not punctuation."""
    if token.isalnum():
        return False
    rest = token.strip(string.punctuation)
    return not rest or (not rest.isascii() and all(_is_punctuation(c) for c in rest))


def _tokens_with_a_letter(s: TextStats) -> int:
    if s.plain.isascii():  # the tokens left with something once all but letters are deleted
        return len(s.plain.translate(_ASCII_BUT_LETTERS).split())
    return sum(1 for t in s.tokens if any(c.isalpha() for c in t))


def split_code(text: str) -> tuple[str, str]:
    """(the prose of a text, its fenced code blocks' lines), as the clean stage writes them."""
    if "```" not in text:
        return text, ""
    code = [m.group("code") for m in _FENCED_CODE.finditer(text)]
    return _FENCED_CODE.sub("", text), "\n".join(code)


class TextStats:
    """What the rules measure, each computed once and only when a rule asks for it: the prose
    of the text (see the module docstring)."""

    def __init__(self, text: str):
        self.text, self.code = split_code(text)
        self.chars = max(len(self.text), 1)
        self._gram_ids: dict[int, np.ndarray] = {}

    @cached_property
    def plain(self) -> str:
        """The prose without the clean stage's markup (each mark, with the indent before a line's, a space)."""
        plain = _LINE_MARKUP.sub("\n ", "\n" + self.text)[1:]  # (a "\n" first: the first line starts one too)
        return _TABLE_BAR.sub(" ", plain) if "|" in plain else plain

    @cached_property
    def tokens(self) -> list[str]:
        return self.plain.split()

    @cached_property
    def n_words(self) -> int:
        """The page's length in words: its prose words and the tokens of its code."""
        return len(self.words) + sum(1 for t in self.code.split() if any(c.isalnum() for c in t))

    @cached_property
    def words(self) -> list[str]:
        """Tokens that hold something other than punctuation."""
        if self.plain.isascii():  # what _all_punctuation says of ASCII tokens, without a call per token
            return [t for t in self.tokens if t.strip(string.punctuation)]
        return [t for t in self.tokens if not _all_punctuation(t)]

    @cached_property
    def word_chars_before(self) -> list[int]:
        """word_chars_before[i]: characters in words[:i] (so any run of words is measured at once)."""
        return list(accumulate(map(len, self.words), initial=0))

    def gram_ids(self, n: int) -> np.ndarray:
        """An id for the word n-gram at each position (words[i:i+n]): equal n-grams, equal ids,
        dense (0 .. distinct n-grams - 1: np.bincount counts them without sorting). Built from the
        (n-1)-grams' ids and the words' ids, exactly (no hashing), in numpy: the n-gram rules look
        at six sizes of n-gram of every word."""
        if n not in self._gram_ids:
            if n == 1:
                index = {w: i for i, w in enumerate(dict.fromkeys(self.words))}
                ids = np.fromiter(map(index.__getitem__, self.words), np.int64, len(self.words))
            else:
                shorter, words = self.gram_ids(n - 1)[:-1], self.gram_ids(1)[n - 1 :]
                pairs = shorter * (int(words.max(initial=0)) + 1) + words  # < len(words)**2: fits int64
                ids = np.unique(pairs, return_inverse=True)[1].reshape(-1).astype(np.int64)
            self._gram_ids[n] = ids
        return self._gram_ids[n]

    @cached_property
    def lines(self) -> list[str]:
        return [ln.strip() for ln in self.text.split("\n") if ln.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        blocks = (p.strip() for p in _PARAGRAPH_BREAK.split(self.text))
        return [p for p in blocks if p and not _HEADING.match(p)]

    @cached_property
    def repeated_lines(self) -> tuple[int, int]:
        return _repeated(self.lines)

    @cached_property
    def repeated_paragraphs(self) -> tuple[int, int]:
        return _repeated(self.paragraphs)


def _repeated(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and how many characters those repeats hold."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def top_ngram_char_fraction(stats: TextStats, n: int) -> float:
    """Characters covered by the most frequent word n-gram (if it occurs more than once; of
    n-grams as frequent, the one that occurs first)."""
    ids = stats.gram_ids(n)
    if not len(ids):
        return 0.0
    times_at = np.bincount(ids)[ids]  # how often the n-gram at each position occurs (ids are dense)
    times = int(times_at.max())
    if times < 2:
        return 0.0
    i = int(np.argmax(times_at == times))  # the first position of a most frequent n-gram
    before = stats.word_chars_before
    return (before[i + n] - before[i]) * times / stats.chars


def duplicate_ngram_char_fraction(stats: TextStats, n: int) -> float:
    """Characters in word n-grams that repeat an earlier n-gram, each word counted at most once.

    Read left to right: an n-gram seen before counts, and reading resumes after it (its words
    are not counted twice); any other is remembered. Only n-grams that occur more than once
    can count or matter, so only their positions are read."""
    ids = stats.gram_ids(n)
    if not len(ids):
        return 0.0
    repeated = np.flatnonzero(np.bincount(ids)[ids] > 1)
    before = stats.word_chars_before
    seen: set[int] = set()
    chars = resume_at = 0
    for i, gram in zip(repeated.tolist(), ids[repeated].tolist(), strict=True):
        if i < resume_at:
            continue
        if gram in seen:
            chars += before[i + n] - before[i]
            resume_at = i + n  # skip past the repeat so that its words are not counted twice
        else:
            seen.add(gram)
    return chars / stats.chars


# -------------------------------------------------------------------------------- the rules
# Each takes the stats and the threshold, and returns a detail string when the document fails.

Rule = Callable[[TextStats, object], "str | None"]


def _min_words(s: TextStats, limit: int) -> str | None:
    n = s.n_words
    return f"{n} words < {limit}" if n < limit else None


def _max_words(s: TextStats, limit: int) -> str | None:
    n = s.n_words
    return f"{n} words > {limit}" if n > limit else None


def _mean_word_length(s: TextStats) -> float:
    return s.word_chars_before[-1] / len(s.words) if s.words else 0.0


def _min_mean_word_length(s: TextStats, limit: float) -> str | None:
    m = _mean_word_length(s)
    return f"mean word length {m:.2f} < {limit}" if m < limit else None


def _max_mean_word_length(s: TextStats, limit: float) -> str | None:
    m = _mean_word_length(s)
    return f"mean word length {m:.2f} > {limit}" if m > limit else None


def _max_symbol_word_ratio(s: TextStats, limit: float) -> str | None:
    symbols = s.plain.count("#") + s.plain.count("...") + s.plain.count("…")
    ratio = symbols / max(len(s.words), 1)
    return f"{ratio:.3f} symbols ('#', '...') per word > {limit}" if ratio > limit else None


def _min_alpha_word_fraction(s: TextStats, limit: float) -> str | None:
    if not s.tokens:
        return f"no words < {limit}"
    alpha = _tokens_with_a_letter(s) / len(s.tokens)
    return f"{alpha:.3f} of words have a letter < {limit}" if alpha < limit else None


def _max_ellipsis_line_fraction(s: TextStats, limit: float) -> str | None:
    frac = sum(1 for ln in s.lines if ln.endswith(_ELLIPSES)) / max(len(s.lines), 1)
    return f"{frac:.3f} of lines end in an ellipsis > {limit}" if frac > limit else None


def _max_bullet_line_fraction(s: TextStats, limit: float) -> str | None:
    frac = sum(1 for ln in s.lines if ln.startswith(_BULLETS)) / max(len(s.lines), 1)
    return f"{frac:.3f} of lines start with a bullet > {limit}" if frac > limit else None


def _max_duplicate_line_fraction(s: TextStats, limit: float) -> str | None:
    frac = s.repeated_lines[0] / max(len(s.lines), 1)
    return f"{frac:.3f} of lines are repeats > {limit}" if frac > limit else None


def _max_duplicate_line_char_fraction(s: TextStats, limit: float) -> str | None:
    frac = s.repeated_lines[1] / s.chars
    return f"{frac:.3f} of characters are in repeated lines > {limit}" if frac > limit else None


def _max_duplicate_paragraph_fraction(s: TextStats, limit: float) -> str | None:
    frac = s.repeated_paragraphs[0] / max(len(s.paragraphs), 1)
    return f"{frac:.3f} of paragraphs are repeats > {limit}" if frac > limit else None


def _max_duplicate_paragraph_char_fraction(s: TextStats, limit: float) -> str | None:
    frac = s.repeated_paragraphs[1] / s.chars
    return f"{frac:.3f} of characters are in repeated paragraphs > {limit}" if frac > limit else None


def _max_top_ngram_char_fraction(s: TextStats, limits: dict[int, float]) -> str | None:
    for n, limit in sorted(limits.items()):
        frac = top_ngram_char_fraction(s, n)
        if frac > limit:
            return f"top {n}-gram covers {frac:.3f} of characters > {limit}"
    return None


def _max_duplicate_ngram_char_fraction(s: TextStats, limits: dict[int, float]) -> str | None:
    for n, limit in sorted(limits.items()):
        frac = duplicate_ngram_char_fraction(s, n)
        if frac > limit:
            return f"repeated {n}-grams cover {frac:.3f} of characters > {limit}"
    return None


# In the order they run: cheap counts first, n-gram statistics last.
RULES: dict[str, Rule] = {
    "min_words": _min_words,
    "max_words": _max_words,
    "min_mean_word_length": _min_mean_word_length,
    "max_mean_word_length": _max_mean_word_length,
    "max_symbol_word_ratio": _max_symbol_word_ratio,
    "min_alpha_word_fraction": _min_alpha_word_fraction,
    "max_ellipsis_line_fraction": _max_ellipsis_line_fraction,
    "max_bullet_line_fraction": _max_bullet_line_fraction,
    "max_duplicate_line_fraction": _max_duplicate_line_fraction,
    "max_duplicate_line_char_fraction": _max_duplicate_line_char_fraction,
    "max_duplicate_paragraph_fraction": _max_duplicate_paragraph_fraction,
    "max_duplicate_paragraph_char_fraction": _max_duplicate_paragraph_char_fraction,
    "max_top_ngram_char_fraction": _max_top_ngram_char_fraction,
    "max_duplicate_ngram_char_fraction": _max_duplicate_ngram_char_fraction,
}
QUALITY_REASONS = tuple(RULES)
assert set(RULES) == set(QualityConfig.model_fields) - {"profile"}, "every QualityConfig threshold needs a rule"
assert _RATIO_RULES <= set(RULES)


def check_quality(text: str, cfg: QualityConfig) -> Rejection | None:
    """The first rule `text` fails, or None."""
    stats = TextStats(text)
    measurable = len(stats.words) >= _MIN_SAMPLE
    for name, rule in RULES.items():
        threshold = getattr(cfg, name)
        if threshold is None or (name in _RATIO_RULES and not measurable):
            continue
        detail = rule(stats, threshold)
        if detail is not None:
            return Rejection(name, detail)
    return None
