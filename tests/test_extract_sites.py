"""Extraction from pages that documentation generators really build, against their sources.

A small Sphinx project (tests/data/sphinx_site) is built with Sphinx's default theme; what its
sources say is read back with docutils, the parser Sphinx itself uses, so that the expected code
and prose are the sources' own and not a copy kept in this file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import lxml.html
import pytest
from docutils import nodes
from docutils.core import publish_doctree

from lm_core.clean.extract import extract_text
from lm_core.clean.pipeline import Dropped, Kept, clean_document
from lm_core.config import CleanConfig, QualityConfig

SOURCES = Path(__file__).parent / "data" / "sphinx_site"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sphinx") / "html"
    subprocess.run([sys.executable, "-m", "sphinx", "-q", "-b", "html", str(SOURCES), str(out)], check=True)
    return out


def _page(site: Path, name: str) -> str:
    return (site / f"{name}.html").read_text(encoding="utf-8")


def _source(name: str) -> nodes.document:
    settings = {"report_level": 5, "halt_level": 5}  # Sphinx's own directives (toctree) are not docutils'
    return publish_doctree((SOURCES / f"{name}.rst").read_text(encoding="utf-8"), settings_overrides=settings)


def test_every_code_block_of_a_built_page_comes_out_verbatim_between_fences(site):
    text = extract_text(_page(site, "guide"), "text/html")
    blocks = [block.astext() for block in _source("guide").findall(nodes.literal_block)]
    assert len(blocks) == 3 and any(line.startswith("    ") for b in blocks for line in b.split("\n"))
    for block in blocks:
        # every line, its indentation and its inner alignment, fenced: "```" or "```python"
        assert f"\n{block}\n```" in text, block
    assert "```python\nfrom tidepool import TideTable\n" in text  # the highlighter's language names the fence


def test_prose_and_headings_are_kept_and_the_theme_chrome_is_not(site):
    html = _page(site, "guide")
    text = extract_text(html, "text/html")
    flat = " ".join(text.split())
    for para in _source("guide").findall(nodes.paragraph):
        assert " ".join(para.astext().split()) in flat
    assert text.startswith("# Reading a tide table\n\n")
    assert "\n\n## Finding the low tides\n\n" in text
    # the sidebar (title, navigation, related pages, search box) as the built page shows it
    sidebar = lxml.html.fromstring(html).xpath("//div[contains(@class, 'sphinxsidebar')]")[0]
    chrome = {line.strip() for line in sidebar.text_content().split("\n") if line.strip()}
    assert len(chrome) > 3
    assert not chrome & {line.strip() for line in text.split("\n")}, chrome & set(text.split("\n"))
    assert "¶" in html and "¶" not in text  # permalink marks


def test_a_page_that_is_only_navigation_is_dropped(site):
    # the index holds a title and the toctree (links to the other pages), nothing else
    outcome = clean_document(_page(site, "index").encode(), "text/html", "utf-8", None, CleanConfig())
    assert isinstance(outcome, Dropped) and outcome.reason == "min_words", outcome


def test_a_changelog_is_documentation_to_the_docs_profile_and_not_to_the_web_one(site):
    body = _page(site, "changes").encode()
    docs = clean_document(body, "text/html", "utf-8", None, CleanConfig())
    assert isinstance(docs, Kept) and "- #141: the parser accepts tab-aligned tables." in docs.text
    web = clean_document(body, "text/html", "utf-8", None, CleanConfig(quality=QualityConfig(profile="web")))
    assert isinstance(web, Dropped) and web.reason in ("max_symbol_word_ratio", "max_bullet_line_fraction"), web


# ----------------------------------------------------------------------------- page structures

# The markup other generators write around code and content, reduced to what matters here.
DOCS_PAGE = """<!DOCTYPE html><html><head><title>Parsing | Tidepool</title></head><body>
<nav class="navbar" aria-label="Main"><a href="/">Tidepool</a><a href="/docs/">Docs</a><a href="/blog/">Blog</a></nav>
<div class="main-wrapper">
<aside class="sidebar"><ul><li><a href="/docs/intro">Introduction</a></li><li><a href="/docs/parsing">Parsing</a></li>
  <li><a href="/docs/units">Units</a></li></ul></aside>
<main><article>
<nav aria-label="Breadcrumbs"><ul><li><a href="/">Home</a></li><li><a href="/docs/">Docs</a></li></ul></nav>
<header><h1>Parsing tables<a class="hash-link" href="#parsing-tables" title="Direct link">&#8203;</a></h1></header>
<p>A table is parsed line by line; columns may be aligned with spaces or with tabs.</p>
<div class="codeBlockContainer"><pre class="prism-code language-python"><code>
<span class="token-line">def parse(lines):</span>
<span class="token-line">    for line in lines:</span>
<span class="token-line">\tyield line.split("\\t")  # a tab, as the file has it</span>
</code></pre><button class="copyButton" aria-label="Copy code">Copy</button></div>
<table class="highlighttable"><tr><td class="linenos"><pre>1
2</pre></td><td class="code"><pre><span></span>hour    height
06      0.31</pre></td></tr></table>
<p>Columns keep their alignment, as the examples above show.</p>
<h2 id="units">Units<a class="headerlink" href="#units" title="Permanent link">¶</a></h2>
<p>Heights are in metres unless the header says feet.</p>
<footer class="doc-footer"><a href="https://example.org/edit/parsing.md">Edit this page</a></footer>
<nav class="pagination" aria-label="Docs pages"><a href="/docs/intro">Previous: Introduction</a>
  <a href="/docs/units">Next: Units</a></nav>
</article></main></div>
<footer class="footer"><p>Copyright 2026 Tidepool contributors</p></footer>
</body></html>"""


def test_code_in_other_generators_markup_keeps_tabs_and_loses_gutters_and_buttons():
    text = extract_text(DOCS_PAGE, "text/html")
    code = 'def parse(lines):\n    for line in lines:\n\tyield line.split("\\t")  # a tab, as the file has it'
    assert f"```python\n{code}\n```" in text
    assert "```\nhour    height\n06      0.31\n```" in text  # the line-number gutter is not code
    assert "Copy" not in text


def test_breadcrumbs_sidebars_footers_and_pagination_go_and_headings_stay():
    text = extract_text(DOCS_PAGE, "text/html")
    assert text.startswith("# Parsing tables\n\n")
    assert "\n\n## Units\n\n" in text and "Heights are in metres unless the header says feet." in text
    for chrome in ("Blog", "Introduction", "Home", "Edit this page", "Previous", "Next", "Copyright", "¶", "\u200b"):
        assert chrome not in text, chrome


def test_a_list_of_links_within_the_site_is_navigation_and_one_of_other_sites_is_content():
    page = """<html><body><main><h1>Resources</h1>
    <p>These projects read tide tables too, and each is worth a look before writing your own parser.</p>
    <ul><li><a href="https://tides.example.org/">Tides</a></li><li><a href="https://moon.example.net/">Moon</a></li></ul>
    <ul><li><a href="/docs/a">Page A</a></li><li><a href="/docs/b">Page B</a></li></ul>
    </main></body></html>"""
    text = extract_text(page, "text/html")
    assert "- Tides\n- Moon" in text
    assert "Page A" not in text and "Page B" not in text


JAVA_SOURCE = """package org.tide;

/**
 * A harbour's tide table: the height of the water at each hour of a day.
 *
 * <p>Tables are read once and kept in memory. A typical use prints the low tides of a day:
 *
 * <pre>{@code
 * TideTable table = TideTable.read(path);
 * for (int hour = 0; hour < 24; hour++) {
 *     if (table.height(hour) < 0.5) {
 *         System.out.println(hour + ":00");
 *     }
 * }
 * }</pre>
 */
public class TideTable {
    /**
     * The height of the water at an hour, in metres.
     *
     * @param hour from 0 to 23
     * @return the height in metres
     */
    public double height(int hour) { return 0.0; }
}
"""


@pytest.mark.skipif(shutil.which("javadoc") is None, reason="needs a JDK's javadoc to build the page")
def test_a_javadoc_page_keeps_its_example_and_its_member_summary_readable(tmp_path):
    source = tmp_path / "src" / "org" / "tide" / "TideTable.java"
    source.parent.mkdir(parents=True)
    source.write_text(JAVA_SOURCE)
    out = tmp_path / "doc"
    subprocess.run(["javadoc", "-quiet", "-d", str(out), "-sourcepath", str(tmp_path / "src"), "org.tide"], check=True)
    text = extract_text((out / "org" / "tide" / "TideTable.html").read_text(encoding="utf-8"), "text/html")
    lines = JAVA_SOURCE.split("\n")
    start, end = lines.index(" * <pre>{@code") + 1, lines.index(" * }</pre>")
    example = "\n".join(line[2:] for line in lines[start:end])  # less " *": javadoc keeps the space after it
    assert f"```\n{example}\n```" in text
    # the summary's cells (type, signature, description) are javadoc's adjacent divs: apart, not glued
    assert "\n  double\n  height(int hour)\n  The height of the water at an hour, in metres." in text
    for chrome in ("Skip navigation links", "PACKAGE", "Overview", "Help"):
        assert chrome not in text, chrome


# pydoc's way of writing a docstring: one <br> per line, indentation and alignment in &nbsp;
DOCSTRING_PAGE = """<html><body><table><tr><td>
<dl><dt><strong>load</strong>(self)</dt><dd><span class="code">Load&nbsp;the&nbsp;table.<br>
&nbsp;<br>
Example:<br>
&nbsp;&nbsp;&nbsp;&nbsp;&gt;&gt;&gt;&nbsp;load(&quot;tides.csv&quot;)<br>
&nbsp;&nbsp;&nbsp;&nbsp;hour&nbsp;&nbsp;&nbsp;height</span></dd></dl>
<p>Each entry of a tide table names an hour and a height, one line per reading, as the port wrote it.</p>
<pre>first line<br>    second line, indented<br/>third line</pre>
</td></tr></table></body></html>"""


def test_line_breaks_and_no_break_spaces_keep_a_docstrings_lines_and_indentation():
    text = extract_text(DOCSTRING_PAGE, "text/html")
    assert 'Load the table.\n\nExample:\n    >>> load("tides.csv")\n    hour   height' in text
    assert "```\nfirst line\n    second line, indented\nthird line\n```" in text  # <br> in code is a line break


def test_a_page_that_shows_the_marks_for_line_breaks_keeps_them():
    """`<br>` is read as a mark character before parsing (speed); a page that shows that
    character, literally or as an entity, keeps it and its line breaks all the same."""
    for shown in ("\u2424", "&#x2424;", "&#9252;", "\u2420"):
        page = DOCSTRING_PAGE.replace("Example:", f"Example {shown} of a load:")
        text = extract_text(page, "text/html")
        assert "Load the table.\n\nExample \u2424 of a load:\n    >>> load" in text.replace("\u2420", "\u2424"), shown
