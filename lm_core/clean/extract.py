"""The main text of a document, repaired and tidied.

HTML: the page is prepared by its structure (`html_prep`: chrome, permalink marks and link
lists dropped, the declared main content kept, code blocks set aside verbatim, layout tables
unwrapped), trafilatura finds the main text in what is left (in its fast mode first: see
`_extract_body`), and `render` writes it out as Markdown-like text with the code blocks fenced
in their places. The cost stays linear in the page's size: a page of 80,000 paragraphs takes
twice as long as one of 40,000.

Plain text and Markdown pass through. Then every prose block is repaired (ftfy: mojibake, broken
surrogates, ligatures; Unicode NFC), stripped of control characters, and its whitespace tidied;
code blocks lose only control characters and trailing spaces, so each of their lines is what the
page showed.
"""

from __future__ import annotations

import re

import ftfy
import lxml.html
import trafilatura
from lxml import etree
from lxml.html import HtmlElement
from trafilatura.utils import repair_faulty_html

from lm_core.clean import html_prep
from lm_core.clean.render import Block, fence, render

# An extraction shorter than this is suspect: trafilatura's own threshold below which it tries
# its rescues (MIN_EXTRACTED_SIZE in its settings). Such a text is under 50 words.
_SHORT_EXTRACTION = 250

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/x-markdown"})

# Repairs that restore what the author wrote; those that would rewrite it (straightening curly
# quotes, folding full-width characters) are off, and HTML entities are left alone because the
# HTML parser has already decoded them (a page *about* HTML may show "&lt;" on purpose).
_FTFY = ftfy.TextFixerConfig(
    unescape_html=False,
    uncurl_quotes=False,
    fix_character_width=False,
    normalization="NFC",
    explain=False,
)
# C0/C1 controls but tab and newline, zero-width no-break space (a stray BOM) and zero-width space
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\u200b]")
# every horizontal space but the plain one and tab: no-break, en/em, thin, ideographic, ...
_ODD_SPACE = re.compile(r"[^\S\n\t ]")
_LINE_BREAKS = re.compile(r"\r\n?|[\u2028\u2029\x85]")
_ASCII_ODD_SPACE = "".join(c for c in map(chr, range(128)) if c.isspace() and c not in "\n\t ")  # \r, \f, ...
_SPACE_RUN = re.compile(r"(?<=\S) {2,}")
_BLANK_LINES = re.compile(r"\n{3,}")


class UnsupportedContent(ValueError):
    """A media type this stage does not extract text from (images, PDFs, ...)."""


def content_kind(content_type: str | None, text: str) -> str:
    """ "html" or "text"; raise UnsupportedContent for anything else. An unknown type is sniffed."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in HTML_TYPES:
        return "html"
    if media in TEXT_TYPES:
        return "text"
    if media:
        raise UnsupportedContent(f"content type {media} is not text")
    head = text[:2048].lstrip().lower()
    looks_html = head.startswith(("<!doctype html", "<html", "<?xml")) or "<body" in head or "<p>" in head
    return "html" if looks_html else "text"


def html_blocks(html: str, *, tables: bool = True, favor: str = "balanced") -> list[Block]:
    """The main text of an HTML page as prose and code blocks ([] if there is none): headings,
    paragraphs, lists, code, and data tables when `tables` is on; `favor` is trafilatura's
    precision/recall trade-off."""
    marked, marks = html_prep.mark_page(html)
    tree = load_html(marked)
    if tree is None:
        return []
    html_prep.drop_chrome(tree)
    code_blocks = html_prep.stash_code_blocks(tree, html, marks)
    scoped = html_prep.main_scope(tree)
    if scoped is not tree:  # the page said where its content is: trafilatura need not guess as hard
        favor = "recall"
    tree = scoped
    html_prep.unwrap_anchors(tree)
    html_prep.flatten_inline_code(tree)
    html_prep.unwrap_layout_tables(tree, marks)
    html_prep.separate_blocks(tree)
    body = _extract_body(tree, tables=tables, favor=favor)
    return [] if body is None else render(body, code_blocks, marks)


def load_html(html: str) -> HtmlElement | None:
    """`trafilatura.load_html` for a decoded page, with `html_prep.PARSER`: the same settings,
    with element classes looked up in C (see there)."""
    beginning = html[:50].lower()
    html = repair_faulty_html(html, beginning)
    tree = None
    try:
        tree = lxml.html.fromstring(html, parser=html_prep.PARSER)
    except Exception:  # ValueError: an encoding declaration in a str; or the parser gave up
        pass
    if tree is None or len(tree) < 1:  # then as bytes, as trafilatura does
        try:
            tree = lxml.html.fromstring(html.encode("utf-8", "surrogatepass"), parser=html_prep.PARSER)
        except Exception:
            tree = None
    if tree is not None and "html" not in beginning and len(tree) < 2:  # not HTML at all
        return None
    return tree


def _extract_body(tree: HtmlElement, *, tables: bool, favor: str) -> etree._Element | None:
    """trafilatura's extracted body (its XML tree), or None. Its fast mode first, without the
    readability/justext fallback: on 878 pydoc and documentation pages the fallback replaced only
    extractions of under 40 characters (fast mode changed the text of two stubs), and its
    comparison is quadratic in a page's paragraphs. An extraction shorter than trafilatura's own
    threshold for trying its rescues (_SHORT_EXTRACTION) is made again with the fallback."""
    for fast in (True, False):
        document = trafilatura.bare_extraction(  # works on a copy of `tree`
            tree,
            fast=fast,
            include_comments=False,
            include_tables=tables,
            include_images=False,
            include_links=False,
            include_formatting=True,
            favor_precision=favor == "precision",
            favor_recall=favor == "recall",
            with_metadata=False,
            deduplicate=False,
            output_format="txt",  # "python" would also render a text we never use (xmltotxt)
        )
        if document is None or document.body is None:
            return None
        if len(document.raw_text) >= _SHORT_EXTRACTION:
            return document.body
    return document.body


def tidy_whitespace(text: str, *, keep_indent: bool) -> str:
    """One kind of line break and of space, no trailing spaces, at most one blank line in a row.
    Indentation is kept for plain text (code in it needs it) and dropped for text extracted from
    HTML, where it is only the page's layout."""
    if not text.isascii() or any(c in text for c in _ASCII_ODD_SPACE):  # (`in` is a C scan; a regex is not)
        text = _LINE_BREAKS.sub("\n", text)
        text = _ODD_SPACE.sub(" ", text)
    lines = []
    for line in text.split("\n"):
        line = line.rstrip()
        if not keep_indent:
            line = _SPACE_RUN.sub(" ", line.lstrip())
        lines.append(line)
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip("\n")


def repair(text: str, *, keep_indent: bool = True) -> str:
    """Mojibake and broken characters fixed, NFC-normalised, control characters removed,
    whitespace tidied."""
    if not text.isascii():  # ASCII has no mojibake and is already NFC: skip ftfy's slow scan
        text = ftfy.fix_text(text, _FTFY)
    text = _CONTROL.sub("", text)
    return tidy_whitespace(text, keep_indent=keep_indent)


def repair_code(code: str) -> str:
    """A code block as shown, less control characters (tab aside), odd line breaks and trailing spaces."""
    code = _CONTROL.sub("", _LINE_BREAKS.sub("\n", code))
    return "\n".join(line.rstrip() for line in code.split("\n")).strip("\n")


def join_blocks(blocks: list[Block]) -> str:
    """Prose repaired and code fenced, a blank line between blocks."""
    out = []
    for block in blocks:
        if block.code:
            code = repair_code(block.text)
            if code.strip():
                out.append(fence(Block(code, code=True, language=block.language)))
        else:
            text = repair(block.text, keep_indent=True)  # the indentation left is the writer's
            if text:
                out.append(text)
    return "\n\n".join(out)


def extract_text(text: str, content_type: str | None, *, tables: bool = True, favor: str = "balanced") -> str:
    """The repaired main text of a decoded document ("" if none); raises UnsupportedContent."""
    if content_kind(content_type, text) == "html":
        return join_blocks(html_blocks(text, tables=tables, favor=favor))
    return repair(text, keep_indent=True)
