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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property

from lm_core.config import QualityConfig

_BULLETS = ("•", "●", "○", "▪", "◦", "‣", "⁃", "·", "-", "*", "–", "—", "+")
_ELLIPSES = ("...", "…")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# a code block as the clean stage fences it: the same run of backticks opens and closes it
_FENCED_CODE = re.compile(r"^(?P<fence>`{3,})[^\n`]*\n(?P<code>.*?)\n(?P=fence)[ \t]*$", re.M | re.S)
_HEADING = re.compile(r"^#{1,6} ")
# the clean stage's markup, not words: heading marks, list markers, table bars
_MARKUP = re.compile(r"^[ \t]*(?:#{1,6}|[-*+]|\d{1,3}[.)])(?= )|(?<!\S)\|(?!\S)", re.M)
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


def _is_punctuation(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


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

    @cached_property
    def plain(self) -> str:
        """The prose without the clean stage's markup."""
        return _MARKUP.sub(" ", self.text)

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
        return [t for t in self.tokens if not all(_is_punctuation(c) for c in t)]

    @cached_property
    def word_chars_before(self) -> list[int]:
        """word_chars_before[i]: characters in words[:i] (so any run of words is measured at once)."""
        out = [0]
        for w in self.words:
            out.append(out[-1] + len(w))
        return out

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


def _ngrams(words: list[str], n: int) -> Iterator[tuple[str, ...]]:
    return zip(*(words[i:] for i in range(n)), strict=False)  # shorter and shorter shifts


def top_ngram_char_fraction(stats: TextStats, n: int) -> float:
    """Characters covered by the most frequent word n-gram (if it occurs more than once)."""
    counts = Counter(_ngrams(stats.words, n))
    if not counts:
        return 0.0
    gram, times = counts.most_common(1)[0]
    if times < 2:
        return 0.0
    return sum(len(w) for w in gram) * times / stats.chars


def duplicate_ngram_char_fraction(stats: TextStats, n: int) -> float:
    """Characters in word n-grams that repeat an earlier n-gram, each word counted at most once."""
    grams = list(_ngrams(stats.words, n))
    before = stats.word_chars_before
    seen: set[tuple[str, ...]] = set()
    chars = i = 0
    while i < len(grams):
        if grams[i] in seen:
            chars += before[i + n] - before[i]
            i += n  # skip past the repeat so that its words are not counted twice
        else:
            seen.add(grams[i])
            i += 1
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
    return sum(len(w) for w in s.words) / len(s.words) if s.words else 0.0


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
    alpha = sum(1 for t in s.tokens if any(c.isalpha() for c in t)) / len(s.tokens)
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
