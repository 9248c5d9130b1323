"""The main text of a document, repaired and tidied.

HTML goes through trafilatura, which keeps the article and drops navigation, headers, footers,
comments and link lists. Two generic fixes run before it, both found on documentation sites
such as pydoc's:

* Layout tables (tables whose cells hold paragraphs, lists, definition lists or other tables)
  are turned back into blocks. trafilatura otherwise renders each cell as one line of a
  Markdown-ish table, so a whole class's docstrings end up on a single line with `|`s.
  Data tables (cells of plain text) stay tables and follow `extract_tables`.
* Named anchors (`<a name=...>` with no href) lose their tag: they are targets, not links, yet
  would count toward link density and get headings such as "class Path" dropped as navigation.

Plain text and Markdown pass through. Then every text is repaired (ftfy: mojibake, broken
surrogates, ligatures; Unicode NFC), stripped of control characters, and its whitespace tidied.
"""

from __future__ import annotations

import re

import ftfy
import trafilatura
from lxml import etree
from lxml.html import HtmlElement

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/x-markdown"})

# Tags whose presence inside a table cell shows that the table lays out a page, not data.
_BLOCK_TAGS = ("table", "dl", "ul", "ol", "pre", "p", "div", "blockquote", "hr", "h1", "h2", "h3", "h4", "h5", "h6")
_LAYOUT_TABLE_TEST = etree.XPath("|".join(f".//td//{t}|.//th//{t}" for t in _BLOCK_TAGS))
# Blocks that cannot sit inside a paragraph: a cell holding one becomes a div, not a p.
_SECTIONING = frozenset({"div", "table", "p", "blockquote", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6"})
_HAS_SECTIONING = etree.XPath("boolean(" + "|".join(f".//{t}" for t in sorted(_SECTIONING)) + ")")
# Block elements that, inside a paragraph made from a cell, must still end a line.
_LINE_ENDERS = frozenset({"dt", "dd", "li", *_BLOCK_TAGS})

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


def _unwrap_anchors(tree: HtmlElement) -> None:
    for anchor in tree.xpath("//a[not(@href)]"):
        anchor.drop_tag()


def _end_lines_inside(block: etree._Element) -> None:
    """Put a <br> after each block element inside `block` (data tables in it excepted), so its
    parts still end lines once it is read as one paragraph."""
    for child in list(block):
        if not isinstance(child.tag, str):  # comments, processing instructions
            continue
        if child.tag != "table":
            _end_lines_inside(child)
        if child.tag in _LINE_ENDERS:
            br = etree.Element("br")
            br.tail, child.tail = child.tail, None
            child.addnext(br)


def _is_sectioning(node: object) -> bool:
    return isinstance(node, etree._Element) and node.tag in _SECTIONING


def _paragraphs_between_sections(cell: etree._Element) -> list[etree._Element]:
    """Gather the text, inline elements and lists lying between the sectioning blocks of `cell`
    into new <p>s, in place; return them."""
    nodes: list[object] = [cell.text] if cell.text else []
    for child in list(cell):
        tail, child.tail = child.tail, None
        cell.remove(child)
        nodes.append(child)
        if tail:
            nodes.append(tail)
    cell.text = None
    made: list[etree._Element] = []
    para = None
    for node in nodes:
        if _is_sectioning(node):
            cell.append(node)
            para = None
            continue
        if para is None:
            if isinstance(node, str) and not node.strip():
                continue
            para = etree.SubElement(cell, "p")
            made.append(para)
        if not isinstance(node, str):
            para.append(node)
        elif len(para):
            para[-1].tail = (para[-1].tail or "") + node
        else:
            para.text = (para.text or "") + node
    return made


def _unwrap_layout_tables(tree: HtmlElement) -> None:
    """Turn each layout table into blocks: rows into divs, and each cell into a paragraph, or,
    when it holds sectioning blocks (a nested layout table), into a div whose loose runs become
    paragraphs. Nested paragraphs are what would make trafilatura reorder the text."""
    for table in tree.xpath("//table"):  # document order: an outer table before its inner ones
        if not _LAYOUT_TABLE_TEST(table):
            continue
        for section in table.xpath("./thead|./tbody|./tfoot"):
            section.tag = "div"
        for row in table.xpath("./tr|./div/tr"):
            row.tag = "div"
            for cell in row.xpath("./td|./th"):
                cell.attrib.clear()  # colspan and friends mean nothing on a block
                if _HAS_SECTIONING(cell):
                    cell.tag = "div"
                    paragraphs = _paragraphs_between_sections(cell)
                else:
                    cell.tag = "p"
                    paragraphs = [cell]
                for para in paragraphs:
                    _end_lines_inside(para)
        table.tag = "div"


def html_to_text(html: str, *, tables: bool = True, favor: str = "balanced") -> str:
    """Main text of an HTML page ("" if there is none): paragraphs, headings, lists, and tables
    when `tables` is on; `favor` is trafilatura's precision/recall trade-off."""
    tree = trafilatura.load_html(html)
    if tree is None:
        return ""
    _unwrap_anchors(tree)
    _unwrap_layout_tables(tree)
    text = trafilatura.extract(
        tree,
        output_format="txt",
        include_comments=False,
        include_tables=tables,
        include_images=False,
        include_links=False,
        include_formatting=False,
        favor_precision=favor == "precision",
        favor_recall=favor == "recall",
        with_metadata=False,
        deduplicate=False,
    )
    return text or ""


def tidy_whitespace(text: str, *, keep_indent: bool) -> str:
    """One kind of line break and of space, no trailing spaces, at most one blank line in a row.
    Indentation is kept for plain text (code in it needs it) and dropped for text extracted from
    HTML, where it is only the page's layout."""
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


def extract_text(text: str, content_type: str | None, *, tables: bool = True, favor: str = "balanced") -> str:
    """The repaired main text of a decoded document ("" if none); raises UnsupportedContent."""
    if content_kind(content_type, text) == "html":
        return repair(html_to_text(text, tables=tables, favor=favor), keep_indent=False)
    return repair(text, keep_indent=True)
