"""An HTML page made ready for main-text extraction, by its structure alone.

trafilatura finds the main text of a page, but it was made for articles: on documentation sites it
keeps permalink marks and navigation bars, drops or flattens code, and renders layout tables as
one line each. These steps run on the parsed tree before it, in this order:

1. `drop_chrome`: navigation, search, banners, footers, buttons, "enable JavaScript" notices
   (`<noscript>`) and link-dense asides go, as their tags and ARIA roles declare them (`<nav>`,
   `role="navigation"`, `<footer>`, ...). Sphinx,
   MkDocs, Docusaurus, Javadoc and most hand-written sites mark their chrome this way. So do
   permalink marks: a link to a fragment whose text has no letter or digit (`¶`, `#`, an icon)
   inside a heading, a term or a caption. So do lists that are only links (a table of
   contents, a "related pages" box, a breadcrumb): each item a link and nothing more. Nothing
   that holds a page's title (`h1`) or main element is dropped, whatever it is marked as.
2. `main_scope`: when the page declares its main content (one `<main>` or `role="main"`, or one
   `<article>`), only that is extracted.
3. `stash_code_blocks`: every code block (`<pre>`, or a multi-line `<code>` that stands as a
   block) is taken out verbatim, its line-number gutter aside, and replaced by a one-word key
   that trafilatura passes through untouched; `render` puts the code back, fenced.
4. `unwrap_layout_tables`: tables that lay out a page (cells holding paragraphs, lists, other
   tables) become blocks. trafilatura otherwise renders each cell as one line of a Markdown-ish
   table, so a whole class's docstrings end up on a single line with `|`s (pydoc's pages). Data
   tables (cells of plain text) stay tables. Named anchors (`<a name>` with no href) lose their
   tag: they are targets, not links, yet would count toward link density.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import lxml.html
from lxml import etree
from lxml.html import HtmlElement

# trafilatura's parser settings, with lxml's HTML element classes looked up in C: lxml.html's
# own lookup is a Python method called for every element a tree walk touches (a tenth of the
# extraction's time). Only <form>, <input>, <select>, <textarea> and <label> would get classes
# of their own there, whose form methods nothing here calls.
PARSER = etree.HTMLParser(
    collect_ids=False, default_doctype=False, encoding="utf-8", remove_comments=True, remove_pis=True
)
PARSER.set_element_class_lookup(
    etree.ElementDefaultClassLookup(
        element=lxml.html.HtmlElement,
        comment=lxml.html.HtmlComment,
        pi=lxml.html.HtmlProcessingInstruction,
        entity=lxml.html.HtmlEntity,
    )
)

# ----------------------------------------------------------------------------- line breaks

# A `<br>` is an element, and a documentation page has many (pydoc writes one per line of each
# docstring: a third of its elements); each element costs every tree walk and XPath query that
# the extraction runs. So each `<br>` is written as a mark in the text before the page is
# parsed, and `render` reads it back. No-break spaces get a mark too: trafilatura collapses
# them with other whitespace within a text, and pydoc lays docstrings out with them (it kept
# them only at the start of a <br>'s tail). The marks are printable, or trafilatura would drop
# them with control characters.


@dataclass(frozen=True)
class Marks:
    """What stands for a line break and for a no-break space in a parsed page's text."""

    line_break: str
    no_break_space: str

    def unmark(self, text: str) -> str:
        return text.replace(self.line_break, "\n").replace(self.no_break_space, "\xa0")


MARKS = Marks(line_break="\u2424", no_break_space="\u2420")  # SYMBOL FOR NEWLINE, SYMBOL FOR SPACE
# A page that shows a mark itself is parsed as it is: its <br>s stay elements, which `render`
# writes as a control character (trafilatura's output holds none) until it splits the lines.
NO_MARKS = Marks(line_break="\x00", no_break_space="\xa0")
_BR = re.compile(r"<br\b[^>]*>", re.IGNORECASE)
_NBSP_ENTITY = re.compile(r"&nbsp;|&#160;|&#x0*a0;", re.IGNORECASE)
_MARK_ENTITY = re.compile(r"&#(?:x0*242[04]|0*92(?:48|52))\b", re.IGNORECASE)


def _shows_marks(html: str) -> bool:
    """Whether the page shows a mark, as a character or a character reference. (`in` finds a
    character at C speed; a regex tries each of the page's characters.)"""
    if MARKS.line_break in html or MARKS.no_break_space in html:
        return True
    return "&#" in html and _MARK_ENTITY.search(html) is not None


def mark_page(html: str) -> tuple[str, Marks]:
    """`html` with each `<br>` and no-break space written as its mark, and the marks used."""
    if _shows_marks(html):
        return html, NO_MARKS
    html = _BR.sub(MARKS.line_break, html).replace("\xa0", MARKS.no_break_space)
    return _NBSP_ENTITY.sub(MARKS.no_break_space, html), MARKS


# What `str.strip()` takes off (Unicode whitespace), and the marks, which stand for spaces.
_BLANK = "".join(c for c in map(chr, range(0x110000)) if c.isspace()) + MARKS.line_break + MARKS.no_break_space


def _visible_length(text: str) -> int:
    """Characters of a piece of text but the whitespace at its ends, marks counted as spaces."""
    return len(text.strip(_BLANK))


# ----------------------------------------------------------------------------- chrome

_CHROME_ROLES = ("navigation", "search", "banner", "contentinfo", "menubar", "toolbar")
# (buttons go, but for tabs: their labels name what each panel holds, "macOS/Linux", "Windows")
# ([@role] first: most elements have none, and then the six comparisons are not made)
_CHROME = etree.XPath(
    "//nav | //footer | //button[not(@role='tab')] | //aside | //header | //noscript | //*[@role]["
    + " or ".join(f"@role='{r}'" for r in _CHROME_ROLES)
    + "]"
)
_HOLDS_CONTENT = etree.XPath("boolean(descendant-or-self::h1 | descendant-or-self::main | .//*[@role='main'])")
# permalink marks: a link to a fragment inside what it names (a heading, a definition term, a
# caption, or any element whose id it points at)
_FRAGMENT_LINKS = etree.XPath("//a[starts-with(@href, '#')]")
_NAMING = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "dt", "caption", "figcaption"})
_WORD = re.compile(r"\w")
_ABSOLUTE = re.compile(r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
_LINK_DENSE = 0.5  # an aside whose text is mostly links within the site is navigation


def _text_length(el: etree._Element) -> int:
    return sum(map(_visible_length, el.itertext()))


def _link_text_length(el: etree._Element, *, local: bool = False) -> int:
    return sum(
        _text_length(a) for a in el.iter("a") if a.get("href") is not None and (not local or _is_local(a.get("href")))
    )


def _remove(el: etree._Element) -> None:
    """Remove `el` but keep its tail (the text after it belongs to its parent)."""
    parent = el.getparent()
    if parent is None:
        return
    if el.tail:
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def _is_local(href: str) -> bool:
    """A link within the site: relative, or to a fragment of the page. (A page's URL is not
    known here, so absolute links all count as links elsewhere.)"""
    return not _ABSOLUTE.match(href)


@dataclass(slots=True)
class _Measure:
    """What the link and layout tests read of an element's subtree (its tail aside)."""

    chars: int  # characters of its text, each piece stripped (as _text_length counts them)
    links: int  # links (<a href>) with text in it, itself included
    link_chars: int  # characters of those links' text (a link inside a link counts in both)
    far_links: int  # of those links, the ones to other sites
    structure: bool  # holds a heading, code (<pre>) or <main> (below itself)
    blocks: bool  # holds a block of _LAYOUT_BLOCKS, or 2+ <p>/<div> (below itself)
    sectioning: bool  # holds a block of _SECTIONING (below itself)


_STRUCTURE = frozenset({"h1", "h2", "h3", "h4", "h5", "h6", "pre", "main"})
# A table lays out a page, not data, when a cell holds blocks of its own: a table, a list, a
# heading, code, or more than one paragraph (one paragraph per cell is how Sphinx writes data).
_LAYOUT_BLOCKS = frozenset({"table", "dl", "ul", "ol", "pre", "blockquote", "hr", "h1", "h2", "h3", "h4", "h5", "h6"})
# Blocks that cannot sit inside a paragraph: a cell holding one becomes a div, not a p.
_SECTIONING = frozenset({"div", "table", "p", "blockquote", "section", "article", "h1", "h2", "h3", "h4", "h5", "h6"})
# The blocks that drop_chrome weighs as link lists; the table cells unwrap_layout_tables weighs are among them.
_MEASURED = frozenset({"ul", "ol", "dl", "div", "p", "td", "th"})


# What an element's start and end mean to _measure, as bits: one dict lookup per event
_COUNTS_STRUCTURE, _COUNTS_LAYOUT, _COUNTS_PARAGRAPH, _COUNTS_SECTIONING, _OPENS = 1, 2, 4, 8, 16
_KIND = {
    tag: (tag in _STRUCTURE) * _COUNTS_STRUCTURE
    + (tag in _LAYOUT_BLOCKS) * _COUNTS_LAYOUT
    + (tag in ("p", "div")) * _COUNTS_PARAGRAPH
    + (tag in _SECTIONING) * _COUNTS_SECTIONING
    + (tag in _MEASURED or tag == "a") * _OPENS
    for tag in (*_STRUCTURE, *_LAYOUT_BLOCKS, *_SECTIONING, *_MEASURED, "a")
}


def _measure(root: etree._Element) -> dict[etree._Element, _Measure]:
    """The _Measure of every element of root's subtree whose tag is in _MEASURED, in one walk:
    running totals (characters, links, ...) are read when an element starts and when it ends, and
    its measure is the difference. (Asking each block for its own text walks its whole subtree:
    O(elements x depth), for each nested block.) A measure stays true of an element while nothing
    inside it is changed. The parser drops comments and processing instructions, whose tails would
    otherwise count as text. Elements come in the order they end: inner blocks before outer.
    (Most elements are none of these tags: for them, a step is one lookup and their text.)"""
    out: dict[etree._Element, _Measure] = {}
    started: list[tuple[int, ...]] = []  # the totals when each open <a> or measured element started
    chars = links = link_chars = far_links = structure = layout = paragraphs = sections = 0
    kinds, blank = _KIND, _BLANK
    for event, el in etree.iterwalk(root, events=("start", "end")):
        kind = kinds.get(el.tag, 0)
        if event == "start":
            if kind:  # counted before the totals are taken, so that an element counts for its ancestors only
                if kind & _COUNTS_STRUCTURE:
                    structure += 1
                if kind & _COUNTS_LAYOUT:
                    layout += 1
                elif kind & _COUNTS_PARAGRAPH:
                    paragraphs += 1
                if kind & _COUNTS_SECTIONING:
                    sections += 1
                if kind & _OPENS:
                    started.append((chars, links, link_chars, far_links, structure, layout, paragraphs, sections))
            text = el.text
            if text:
                chars += len(text.strip(blank))  # _visible_length, inline: this runs for every element
            continue
        if kind & _OPENS:
            if el.tag == "a":
                c0 = started.pop()[0]
                href = el.get("href")
                if chars > c0 and href is not None:
                    links += 1
                    link_chars += chars - c0
                    far_links += not _is_local(href)
            else:
                c0, n0, l0, f0, s0, b0, p0, x0 = started.pop()
                own_blocks = layout > b0 or paragraphs - p0 > 1
                out[el] = _Measure(
                    chars - c0, links - n0, link_chars - l0, far_links - f0, structure > s0, own_blocks, sections > x0
                )
        tail = el.tail
        if tail and el is not root:
            chars += len(tail.strip(blank))
    return out


def _is_link_block(m: _Measure) -> bool:
    """A list or a box whose text is links within the site and nothing more (separators aside):
    a table of contents, a breadcrumb, a menu, a "related pages" box. Explained links ("`json`:
    encoding and decoding"), lists of links to other sites (a page of examples or resources)
    and blocks holding headings or code are content and stay."""
    if m.links < 2 or m.far_links or m.structure:
        return False
    return m.chars - m.link_chars <= 3 * m.links


def drop_chrome(tree: HtmlElement) -> None:
    """Remove navigation, permalink marks and link lists (see the module docstring)."""
    for a in _FRAGMENT_LINKS(tree):
        if _WORD.search("".join(a.itertext())):
            continue
        target = a.get("href")[1:]
        if any(up.tag in _NAMING or (target and up.get("id") == target) for up in a.iterancestors()):
            _remove(a)
    for el in _CHROME(tree):
        if el.getparent() is None or _HOLDS_CONTENT(el):
            continue
        if el.tag == "aside" and _link_text_length(el, local=True) < _LINK_DENSE * _text_length(el):
            continue  # a sidebar of the text itself (a note, a pull quote)
        if el.tag == "header" and not _link_text_length(el):
            continue  # an article's own header: its byline, its lead
        _remove(el)
    # Every block is weighed as the page stood before any was removed: removing a block changes
    # only the measures of its ancestors, so whether an outer block goes is decided as if no inner
    # one had gone, and removing a block inside one that goes (as they come: inner first) changes
    # nothing in the end.
    for block, measure in _measure(tree).items():
        if _is_link_block(measure):
            _remove(block)


# Tags trafilatura removes with their text, which inside declared content hold text of it: a
# footnote or a note (drop_chrome has taken the navigating asides), a figure's caption, a date.
_RENAMED_IN_MAIN = {"aside": "div", "figure": "div", "time": "span", "header": "div", "button": "span"}


def main_scope(tree: HtmlElement) -> HtmlElement:
    """The page's declared main content as a page of its own, or the page itself."""
    candidates = tree.xpath("//main[not(ancestor::main)] | //*[@role='main'][not(ancestor::*[@role='main'])]")
    if len(candidates) != 1:
        candidates = tree.xpath("//article[not(ancestor::article)]")
    if len(candidates) != 1 or not _text_length(candidates[0]):
        return tree
    page = lxml.html.document_fromstring("<html><body></body></html>", parser=PARSER)  # HtmlElements, for trafilatura
    body = page.find("body")
    main = candidates[0]
    main.tail = None
    body.append(main)
    # trafilatura drops elements whose class or id says "comment", "share", "nav", ... and
    # blocks dense in links: inside what the page declares as its content, that loses real
    # sections ("Comments" in a guide to reStructuredText, a list of projects using a tool),
    # and the chrome is gone already. So its guesses get nothing to go on.
    for el in main.iter():
        if isinstance(el.tag, str) and el.tag != "pre":
            el.attrib.pop("class", None)
            el.attrib.pop("id", None)
            el.tag = _RENAMED_IN_MAIN.get(el.tag, el.tag)
    etree.strip_tags(main, "a")
    return page


# ----------------------------------------------------------------------------- code blocks


@dataclass(frozen=True)
class CodeBlock:
    text: str  # the lines as the page shows them, without a trailing newline
    language: str | None  # from the block's class ("highlight-python", "language-js"), if any


_OUTER_PRE = etree.XPath("//pre[not(ancestor::pre)]")
_BLOCK_CODE = etree.XPath("//code[not(ancestor::pre) and not(ancestor::code)]")
_BLOCK_PARENTS = frozenset(
    {"div", "section", "article", "main", "body", "li", "dd", "td", "th", "blockquote", "figure", "details"}
)
# the language in the class the highlighters write: highlight-python (Sphinx), language-js
# (Prism, highlight.js, MkDocs), lang-go, sourceCode haskell (pandoc), brush: ruby (SyntaxHighlighter)
_LANGUAGE_CLASS = re.compile(r"(?:^|\s)(?:(?:highlight|language|lang)[-_]|sourceCode\s+|brush:\s*)([A-Za-z0-9_+#.-]+)")
_NOT_A_LANGUAGE = frozenset({"default", "none", "text", "plain", "plaintext", "notranslate", "output", "console"})
# a line-number gutter: the highlighter's own markup (pygments, prism), or a cell of numbers
_GUTTER_CLASS = re.compile(r"(?:^|\s)(?:linenos?|lineno|line-numbers?(?:-rows)?|gutter)(?:\s|$)")
_NUMBERS_ONLY = re.compile(r"^\s*(\d+\s*)+$")


def _language(el: etree._Element) -> str | None:
    for node in (el, *el.iterchildren("code"), *el.iterancestors()):
        for match in _LANGUAGE_CLASS.finditer(node.get("class") or ""):
            name = match.group(1).lower()
            if name not in _NOT_A_LANGUAGE:
                return name
        if node.tag in ("body", "section", "article"):
            break
    return None


def _verbatim(el: etree._Element, marks: Marks) -> str:
    """The text of a code block as shown: `<br>` is a line break, gutters are left out."""
    parts: list[str] = []

    def walk(node: etree._Element) -> None:
        if isinstance(node.tag, str):  # elements; comments and processing instructions show nothing
            if node.tag == "br":
                parts.append("\n")
            elif not _GUTTER_CLASS.search(node.get("class") or ""):
                parts.append(node.text or "")
                for child in node:
                    walk(child)
                    parts.append(child.tail or "")
        # (the tail is added by the parent)

    walk(el)
    lines = marks.unmark("".join(parts)).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _is_gutter_cell(pre: etree._Element) -> bool:
    """A `<pre>` of line numbers in a table cell beside the cell that holds the code."""
    if not _NUMBERS_ONLY.match("".join(pre.itertext())):
        return False
    cell = next((a for a in pre.iterancestors("td", "th")), None)
    return cell is not None and any(sib.xpath(".//pre") for sib in cell.itersiblings())


def stash_code_blocks(tree: HtmlElement, html: str, marks: Marks) -> dict[str, CodeBlock]:
    """Replace every code block by `<pre>key</pre>`; return key -> the block. The keys hold a
    digest of the page, so that a page cannot spell one of its own keys by accident."""
    nonce = hashlib.blake2b(html.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    blocks: dict[str, CodeBlock] = {}
    found = list(_OUTER_PRE(tree))
    found += [c for c in _BLOCK_CODE(tree) if "\n" in (c.text or "") and (c.getparent().tag in _BLOCK_PARENTS)]
    for el in found:
        if el.getparent() is None:
            continue
        if el.tag == "pre" and _is_gutter_cell(el):
            _remove(el)
            continue
        text = _verbatim(el, marks)
        if not text.strip():
            _remove(el)
            continue
        key = f"lmforge{nonce}code{len(blocks)}x"  # the x: code1 is no prefix of code12
        blocks[key] = CodeBlock(text, _language(el))
        stand_in = el.makeelement("pre", {})
        stand_in.text = key
        stand_in.tail = el.tail
        el.getparent().replace(el, stand_in)
    return blocks


# ----------------------------------------------------------------------------- layout tables

# Block elements that, inside a paragraph made from a cell, must still end a line.
_LINE_ENDERS = frozenset({"dt", "dd", "li", "p", "div", *_LAYOUT_BLOCKS})


def unwrap_anchors(tree: HtmlElement) -> None:
    for anchor in tree.xpath("//a[not(@href)]"):
        anchor.drop_tag()


# (each div asks for its ancestors: asking each item for its divs walks nested items' subtrees again)
_ITEM_DIVS = etree.XPath(
    "//div[ancestor::li or ancestor::dd]"
    "[not(.//div | .//p | .//ul | .//ol | .//dl | .//table | .//pre | .//blockquote)]"
)


def separate_blocks(tree: HtmlElement) -> None:
    """Inside list items, a `<div>` of text becomes a paragraph: trafilatura runs an item's divs
    together with no space or line between them (Javadoc's member summaries,
    `<li><div>double</div><div>height(int hour)</div><div>The height...</div>`, read
    "doubleheight(int hour)The height..."), while it keeps an item's paragraphs apart."""
    for div in _ITEM_DIVS(tree):
        div.tag = "p"


def flatten_inline_code(tree: HtmlElement) -> None:
    """Inline code keeps its text and loses the markup inside it (highlighting spans, an `<em>`
    for a placeholder): trafilatura moves the text of elements nested in inline code out of
    order ("./locales/<em>language</em>/LC_MESSAGES" came out with "language" sentences later)."""
    for code in tree.xpath("//code[not(ancestor::pre)] | //tt | //kbd | //samp"):
        if len(code):
            etree.strip_tags(code, "*")


def _end_lines_inside(block: etree._Element, marks: Marks) -> None:
    """End a line after each block element inside `block` (inside its data tables excepted), so
    its parts still end lines once it is read as one paragraph: a line-break mark at the end of
    the element's text, or a <br> after it in a page parsed without marks. (The elements are
    found by tag in one walk; the marks of an element and of its last child do not meet.)"""
    in_tables = {el for table in block.iter("table") if table is not block for el in table.iterdescendants()}
    for child in [el for el in block.iter(*_LINE_ENDERS) if el is not block and el not in in_tables]:
        if marks is NO_MARKS:
            br = etree.Element("br")
            br.tail, child.tail = child.tail, None
            child.addnext(br)
        elif len(child):
            child[-1].tail = (child[-1].tail or "") + marks.line_break
        else:
            child.text = (child.text or "") + marks.line_break


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


def _is_link_box(m: _Measure) -> bool:
    """A cell of links and nothing else (separators aside): pydoc's header links, an index of
    names, a menu laid out in a table."""
    return m.links > 0 and m.chars - m.link_chars <= 3 * m.links


def _is_data_table(table: etree._Element, measures: dict[etree._Element, _Measure]) -> bool:
    """Rows of cells of plain text, at least two rows with two cells filled: data. A cell holding
    blocks, or a "table" whose rows hold one filled cell each (a heading row over a content row,
    a spacer cell beside the content), lays out a page."""
    rows = table.xpath("./tr | ./*/tr")
    cells = [row.xpath("./td | ./th") for row in rows]
    if any(measures[cell].blocks for row in cells for cell in row):
        return False
    return sum(1 for row in cells if sum(1 for c in row if measures[c].chars) >= 2) >= 2


def unwrap_layout_tables(tree: HtmlElement, marks: Marks) -> None:
    """Turn each layout table into blocks: rows into divs, and each cell into a paragraph, or,
    when it holds sectioning blocks (a nested layout table), into a div whose loose runs become
    paragraphs. Nested paragraphs are what would make trafilatura reorder the text."""
    tables = tree.xpath("//table")  # document order: an outer table before its inner ones
    if not tables:
        return
    # Unwrapping a table changes its own cells (and takes out link boxes) but not what lies
    # inside a cell's elements, nor the text of an inner table's cells: one measure serves all.
    measures = _measure(tree)
    for table in tables:
        if _is_data_table(table, measures):
            continue
        for section in table.xpath("./thead|./tbody|./tfoot"):
            section.tag = "div"
        for row in table.xpath("./tr|./div/tr"):
            row.tag = "div"
            for cell in row.xpath("./td|./th"):
                if _is_link_box(measures[cell]):
                    _remove(cell)  # a box of links beside the content: navigation
                    continue
                cell.attrib.clear()  # colspan and friends mean nothing on a block
                if measures[cell].sectioning:
                    cell.tag = "div"
                    paragraphs = _paragraphs_between_sections(cell)
                else:
                    cell.tag = "p"
                    paragraphs = [cell]
                for para in paragraphs:
                    _end_lines_inside(para, marks)
        table.tag = "div"
