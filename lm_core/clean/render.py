"""trafilatura's extracted tree, written out as Markdown-like text.

trafilatura's own text and Markdown writers strip every line, so code loses its indentation,
and they escape Markdown characters in prose. This writer keeps to what a reader and a language
model need: headings as `#` lines, list items as `- ` lines (nested ones indented), data tables
as `| a | b |` rows, paragraphs separated by a blank line, and code blocks — put back from
`html_prep.stash_code_blocks` — verbatim between fences (```` ```python ````), so that
downstream stages and a reader can tell code from prose. Prose whitespace is collapsed as a
browser would; a line break (`<br>`) stays a line break.

The result is a list of blocks, each prose or code, so that repairs meant for prose (Unicode
fixes, whitespace tidying) never touch code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from lm_core.clean.html_prep import CodeBlock, Marks

_COLLAPSIBLE = " \t\n\r\f\v"  # what a browser collapses (not the no-break space)
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_BLOCK_TAGS = frozenset({"head", "p", "list", "item", "table", "quote", "div", "body", "main", "graphic"})


def _collapsed(text: str, marks: Marks) -> str:
    """Text with its whitespace collapsed as a browser would, line by line (lines end at
    `marks.line_break`), but for no-break spaces: the author typed those to lay a line out (pydoc
    writes docstrings, and the doctests in them, indented that way), so each stays a space, at
    the start of a line too. (Done to the whole text at once: no run of spaces crosses a mark.)"""
    text = _SPACES.sub(" ", text.replace(marks.no_break_space, "\xa0"))
    text = marks.line_break.join(line.strip(_COLLAPSIBLE) for line in text.split(marks.line_break))
    return text.replace(" \xa0", "\xa0").replace("\xa0 ", "\xa0").replace("\xa0", " ")


@dataclass(frozen=True)
class Block:
    text: str
    code: bool = False
    language: str | None = None


def fence(block: Block) -> str:
    """A code block between backtick fences longer than any backtick run that starts a line."""
    runs = [len(m.group(0)) for m in re.finditer(r"(?m)^\s*`{3,}", block.text)]
    ticks = "`" * max(3, *(r + 1 for r in runs)) if runs else "```"
    return f"{ticks}{block.language or ''}\n{block.text}\n{ticks}"


class _Writer:
    def __init__(self, code_blocks: dict[str, CodeBlock], marks: Marks):
        self.code_blocks = code_blocks
        self.marks = marks
        self.keys = re.compile("|".join(map(re.escape, code_blocks))) if code_blocks else None
        self.blocks: list[Block] = []

    # -- output

    def prose(self, text: str) -> None:
        """Add prose, splitting out any code key trafilatura left inside it."""
        if self.keys is None:
            self._add(text)
            return
        start = 0
        for m in self.keys.finditer(text):
            self._add(text[start : m.start()])
            self.code(m.group(0))
            start = m.end()
        self._add(text[start:])

    def _add(self, text: str) -> None:
        text = "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))
        if text.strip():
            self.blocks.append(Block(text))

    def code(self, text: str) -> None:
        stashed = self.code_blocks.get(text.strip())
        if stashed is not None:
            self.blocks.append(Block(stashed.text, code=True, language=stashed.language))
            return
        text = self.marks.unmark(text)
        if "\n" in text.strip("\n"):  # code trafilatura found on its own (it keeps its text)
            self.blocks.append(Block(text.strip("\n"), code=True))
        else:
            self.prose(text)

    # -- reading the tree

    def is_block(self, el: etree._Element) -> bool:
        """Blocks start a new paragraph; a `code` element is one when it holds lines (inline
        code is a word or two in a sentence)."""
        if el.tag == "code":
            text = self.marks.unmark("".join(el.itertext()))
            if text.strip() in self.code_blocks:
                return True
            # code trafilatura found on its own: lines standing between blocks (inline code may
            # hold a line break where the page's source wrapped a sentence)
            parent = el.getparent()
            return "\n" in text.strip("\n") and parent is not None and parent.tag in ("body", "div", "quote")
        return el.tag in _BLOCK_TAGS

    def inline(self, el: etree._Element, *, in_item: bool = False) -> str:
        """The text of `el` and its inline children, whitespace collapsed, <lb/> kept. In a list
        item, paragraphs are lines and the other blocks are left for `list` to write."""
        lines = _collapsed(self._raw(el, in_item), self.marks).split(self.marks.line_break)
        if in_item:
            lines = (line for line in lines if line)
        return "\n".join(lines).strip()

    def _raw(self, el: etree._Element, in_item: bool) -> str:
        """The text of `el` as it stands, line breaks marked: the spaces at the edges of inline
        elements separate words (`<em>Argument] </em><em>| None</em>`)."""
        parts = [el.text or ""]
        for child in el:
            if in_item and child.tag == "p":
                parts.append(self.marks.line_break + self._raw(child, in_item) + self.marks.line_break)
            elif in_item and self.is_block(child):
                parts.append(self.marks.line_break)
            elif child.tag == "lb":
                parts.append(self.marks.line_break)
            else:
                parts.append(self._raw(child, False))
            parts.append(child.tail or "")
        return "".join(parts)

    def block(self, el: etree._Element) -> None:
        tag = el.tag
        if tag == "head":
            level = int((el.get("rend") or "h2")[1:] or 2) if (el.get("rend") or "").startswith("h") else 2
            self.prose("#" * min(max(level, 1), 6) + " " + self.inline(el).replace("\n", " "))
        elif tag == "list":
            self.list(el, depth=0)
        elif tag == "table":
            self.table(el)
        elif tag == "code":
            self.code("".join(el.itertext()))
        elif tag == "graphic":
            return
        elif any(self.is_block(child) for child in el):  # quote, div, p, item holding blocks
            self.mixed(el)
        else:
            self.prose(self.inline(el))

    def mixed(self, el: etree._Element) -> None:
        """An element holding loose text and blocks: runs of inline content become paragraphs."""
        run = etree.Element("p")
        run.text = el.text
        for child in list(el):  # (inline children move out of it)
            if self.is_block(child):
                self.prose(self.inline(run))
                run = etree.Element("p")
                self.block(child)
                run.text = child.tail
            else:
                run.append(child)  # moves it, and its tail with it (the tree is ours to consume)
        self.prose(self.inline(run))

    def list(self, el: etree._Element, depth: int) -> None:
        """Items as lines under one marker each; a block inside an item (code, a nested list,
        a table) ends the lines so far and is written in its place."""
        lines: list[str] = []
        ordered = el.get("rend") == "ol"
        number = 0
        pad = "  " * depth
        previous = ""  # the rend of the item before
        # text trafilatura left in a list outside its items
        for loose in _collapsed(el.text or "", self.marks).split(self.marks.line_break):
            if loose:
                lines.append(pad + loose)
        for item in el:
            if item.tag != "item":
                continue
            rend = item.get("rend") or ""
            if rend.startswith("dt"):
                marker = ""  # a definition list's term stands on its own line, its definition below
                if previous.startswith("dd"):
                    self.flush_list(lines)  # a blank line between one definition and the next term
            elif rend.startswith("dd"):
                marker = "  "
            else:
                number += 1
                marker = f"{number}. " if ordered else "- "
            first = True
            for part in self.item_parts(item):
                if isinstance(part, str):
                    lead = pad + (marker if first else " " * len(marker))
                    lines.append(lead + part.replace("\n", "\n" + pad + " " * len(marker)))
                    first = False
                    continue
                self.flush_list(lines)
                if part.tag == "list":
                    self.list(part, depth + 1)
                else:
                    self.block(part)
            previous = rend
        self.flush_list(lines)

    def item_parts(self, item: etree._Element) -> list[str | etree._Element]:
        """An item's content in order: runs of text (inline content and paragraphs, one line
        each) and the blocks between them."""
        parts: list[str | etree._Element] = []
        run = etree.Element("p")
        run.text = item.text

        def end_run() -> None:
            text = self.inline(run)
            if text:
                parts.append(text)

        for child in list(item):
            if child.tag == "p" and not any(self.is_block(c) for c in child):
                end_run()
                run = etree.Element("p")
                text = self.inline(child)
                if text:
                    parts.append(text)
                run.text = child.tail
            elif child.tag == "p" or self.is_block(child):
                end_run()
                run = etree.Element("p")
                parts.append(child)
                run.text = child.tail
            else:
                run.append(child)  # moves it, and its tail with it (the tree is ours to consume)
        end_run()
        return parts

    def flush_list(self, lines: list[str]) -> None:
        if lines:
            self.prose("\n".join(lines))
            lines.clear()

    def table(self, el: etree._Element) -> None:
        rows = []
        for row in el.iter("row"):
            cells = [self.inline(c).replace("\n", " ").replace("|", "\\|") for c in row if c.tag == "cell"]
            if any(cells):
                rows.append(("| " + " | ".join(cells) + " |", all(c.get("role") == "head" for c in row)))
        if not rows:
            return
        lines = [rows[0][0]]
        if rows[0][1]:
            lines.append("|" + " --- |" * rows[0][0].count(" | ") + " --- |")
        lines += [r for r, _ in rows[1:]]
        self.prose("\n".join(lines))


def render(body: etree._Element, code_blocks: dict[str, CodeBlock], marks: Marks) -> list[Block]:
    """The blocks of trafilatura's extracted `body`, code blocks put back in place of their keys."""
    writer = _Writer(code_blocks, marks)
    writer.mixed(body)
    return writer.blocks
