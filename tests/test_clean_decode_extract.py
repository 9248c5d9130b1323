"""Decoding hostile bytes and extracting main text: never a crash, always sensible text."""

import random

import pytest
from helpers import pydoc_pages

from lm_core.clean.decode import decode_body, garbage_fraction
from lm_core.clean.extract import UnsupportedContent, content_kind, extract_text, repair
from lm_core.clean.pipeline import NOT_TEXT, UNSUPPORTED, Dropped, clean_document
from lm_core.config import CleanConfig

ACCENTED = "Café society met at the “Old Mill” — a naïve résumé of façades and crème brûlée. " * 4

# ----------------------------------------------------------------------------- decode


def test_declared_encoding_is_used_when_it_decodes():
    d = decode_body(ACCENTED.encode("cp1252"), declared="windows-1252")
    assert d.text == ACCENTED and d.method == "declared" and not d.replaced


def test_invalid_utf8_never_raises_and_keeps_the_rest():
    body = b"valid start " + b"\xff\xfe\xc3\x28 broken \x80 bytes" + b" valid end"
    d = decode_body(body, declared="utf-8")
    assert d.text.startswith("valid start") and d.text.endswith("valid end")


def test_a_lying_declaration_falls_through_to_what_decodes():
    # declared UTF-8, really windows-1252: strict UTF-8 fails, the guess reads it right
    d = decode_body(ACCENTED.encode("cp1252"), declared="utf-8")
    assert d.text == ACCENTED and d.method == "guessed"


def test_a_declaration_that_decodes_to_mojibake_is_repaired():
    # declared Latin-1, really UTF-8: decodes "strictly" into mojibake, which repair undoes
    body = "Café naïve résumé, déjà vu.".encode()
    d = decode_body(body, declared="iso-8859-1")
    assert repair(d.text) == "Café naïve résumé, déjà vu."


def test_undeclared_windows_1252_is_recognised():
    d = decode_body(ACCENTED.encode("cp1252"))
    assert d.text == ACCENTED and d.encoding == "cp1252"


def test_unknown_declared_labels_are_ignored():
    assert decode_body(b"plain ascii", declared="no-such-charset", detected="x-bogus").text == "plain ascii"


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig"])
def test_byte_order_marks_win(codec):
    d = decode_body(ACCENTED.encode(codec), declared="iso-8859-1")  # the BOM outranks a declaration
    assert d.text == ACCENTED and d.method == "bom"


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_sniffed(codec):
    d = decode_body(ACCENTED.encode(codec))
    assert d.text == ACCENTED and d.method == "sniffed"


def test_empty_body():
    d = decode_body(b"")
    assert d.text == "" and d.method == "empty"


def test_binary_garbage_decodes_to_something_flagged_as_garbage():
    body = random.Random(0).randbytes(4096)
    d = decode_body(body, declared="utf-8")
    assert d.replaced
    assert garbage_fraction(d.text) > 0.1
    assert garbage_fraction(ACCENTED) == 0.0


def test_binary_and_unsupported_documents_are_rejected_with_a_reason():
    cfg = CleanConfig()
    binary = clean_document(random.Random(1).randbytes(2048), "text/html", None, None, cfg)
    assert isinstance(binary, Dropped) and binary.reason == NOT_TEXT
    pdf = clean_document(b"%PDF-1.7 ...", "application/pdf", None, None, cfg)
    assert isinstance(pdf, Dropped) and pdf.reason == UNSUPPORTED


# ----------------------------------------------------------------------------- repair


def test_repair_normalises_controls_and_whitespace():
    text = "Cafe\u0301\u00a0au\u200b lait\x07\r\nnext\u2028line  \t \n\n\n\n\nlast\ufeff"
    assert repair(text) == "Café au lait\nnext\nline\n\nlast"


def test_repair_keeps_indentation_of_plain_text_but_not_of_html_text():
    code = "def f():\n    return 1\n"
    assert repair(code, keep_indent=True) == "def f():\n    return 1"
    assert repair("   spaced    out  ", keep_indent=False) == "spaced out"


def test_content_kind():
    assert content_kind("text/html; charset=utf-8", "") == "html"
    assert content_kind("text/markdown", "# Title") == "text"
    assert content_kind(None, "<!DOCTYPE html><html><body><p>x</p></body></html>") == "html"
    assert content_kind(None, "just words") == "text"
    with pytest.raises(UnsupportedContent):
        content_kind("image/png", "")


def test_plain_text_and_markdown_pass_through():
    md = "# Notes\n\nSome *markdown* text.\n\n    code block\n"
    assert extract_text(md, "text/markdown") == "# Notes\n\nSome *markdown* text.\n\n    code block"


# ----------------------------------------------------------------------------- HTML

ARTICLE_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Tide pools | Coastal Notes</title>
<script>window.analytics = {track: function(){}};</script><style>body { font-family: serif; }</style></head>
<body>
<header><div class="logo">Coastal Notes</div>
  <nav class="main-nav"><ul>
    <li><a href="/">Home</a></li><li><a href="/articles">Articles</a></li>
    <li><a href="/about">About us</a></li><li><a href="/subscribe">Subscribe to our newsletter</a></li>
  </ul></nav></header>
<div class="breadcrumbs"><a href="/">Home</a> &raquo; <a href="/articles">Articles</a> &raquo; Tide pools</div>
<main><article>
  <h1>Tide pools of the northern coast</h1>
  <p>At low tide the rocky shelf below the lighthouse turns into a maze of shallow pools, each one a small
  world with its own residents. Anemones close into tight green buttons when the water drains away, and
  hermit crabs drag their borrowed shells from one crevice to the next in search of shade.</p>
  <p>The pools nearest the sea are refreshed twice a day and hold the richest life: starfish, periwinkles,
  sculpins that vanish against the gravel, and now and then a small octopus that has misjudged the tide.</p>
  <h2>Visiting without harm</h2>
  <p>Walk on bare rock rather than on mussel beds or seaweed, which hide animals and are slippery besides.
  If you turn a stone to look underneath, put it back exactly as it was.</p>
</article></main>
<aside class="sidebar"><h3>Popular posts</h3><ul>
  <li><a href="/p/1">Ten best beaches for sunsets</a></li><li><a href="/p/2">Why seagulls steal your chips</a></li>
</ul></aside>
<footer><p>Copyright 2024 Coastal Notes. All rights reserved.</p>
  <p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></p></footer>
</body></html>"""


def test_boilerplate_is_dropped_and_the_article_kept():
    text = extract_text(ARTICLE_PAGE, "text/html")
    assert "Tide pools of the northern coast" in text
    assert "hermit crabs drag their borrowed shells" in text
    assert "Walk on bare rock rather than on mussel beds" in text
    for chrome in (
        "Subscribe to our newsletter",
        "About us",
        "Popular posts",
        "seagulls",
        "Copyright 2024",
        "Privacy policy",
        "analytics",
        "font-family",
    ):
        assert chrome not in text, chrome
    # headings are marked, and blocks are apart: paragraphs are not run together
    assert "\n\n## Visiting without harm\n\n" in text


def test_data_tables_follow_the_tables_setting():
    page = ARTICLE_PAGE.replace(
        "</article>",
        "<table><tr><th>Creature</th><th>Zone</th></tr><tr><td>Periwinkle</td><td>upper shore</td></tr>"
        "<tr><td>Sculpin</td><td>lower pools</td></tr></table></article>",
    )
    assert "| Creature | Zone |\n| --- | --- |\n| Periwinkle | upper shore |" in extract_text(page, "text/html")
    assert "Periwinkle" not in extract_text(page, "text/html", tables=False)


def test_malformed_html_never_crashes():
    for page in ["<html><body><p>unclosed <b>bold <i>nested", "<<<>>>", "<p>" * 5000, "<html></html>", ""]:
        assert isinstance(extract_text(page, "text/html"), str)


def _served_pydoc_page(module: str) -> str:
    return pydoc_pages(module)[module]


def test_a_pydoc_page_keeps_its_docstrings_and_drops_its_chrome():
    text = extract_text(_served_pydoc_page("json"), "text/html")
    lines = text.splitlines()
    # the module docstring, line by line
    assert "JSON (JavaScript Object Notation) <https://json.org> is a subset of" in lines
    assert "Compact encoding::" in lines
    # class headings and class docstrings
    assert "class JSONDecoder(builtins.object)" in lines
    assert "Simple JSON <https://json.org> decoder" in lines
    # method and function signatures, each followed by its docstring
    i = lines.index(
        "dumps(obj, *, skipkeys=False, ensure_ascii=True, check_circular=True, allow_nan=True, "
        "cls=None, indent=None, separators=None, default=None, sort_keys=False, **kw)"
    )
    assert lines[i + 1] == "Serialize ``obj`` to a JSON formatted ``str``."
    assert any(line.startswith("raw_decode(self, s, idx=0)") for line in lines)
    # the doctests of a docstring keep their indentation (pydoc writes it with no-break spaces)
    i = lines.index("Pretty printing::")
    assert lines[i + 2 : i + 8] == [
        "    >>> import json",
        "    >>> print(json.dumps({'4': 5, '6': 7}, sort_keys=True, indent=4))",
        "    {",
        '        "4": 5,',
        '        "6": 7',
        "    }",
    ]
    # the server's navigation bar and search forms are gone
    for chrome in ("Module Index", "Topics", "Keywords", "Get", "Search"):
        assert chrome not in lines, chrome


def test_a_class_heavy_pydoc_page_keeps_classes_in_order():
    text = extract_text(_served_pydoc_page("textwrap"), "text/html")
    heading = text.index("class TextWrapper(builtins.object)")
    assert heading < text.index("Object for wrapping/filling text.") < text.index("wrap(self, text)")
    assert "Remove any common leading whitespace from every line in `text`." in text  # dedent()


def test_a_page_of_many_paragraphs_is_extracted_whole_and_in_order():
    """A long page without a declared main content goes through trafilatura's fast mode (its
    fallback comparison is quadratic in paragraphs): every paragraph is kept, once, in order."""
    n = 5000
    page = "<html><body>" + "".join(f"<p>Paragraph {i} says something about topic {i % 97}.</p>" for i in range(n))
    paragraphs = extract_text(page + "</body></html>", "text/html").split("\n\n")
    assert paragraphs == [f"Paragraph {i} says something about topic {i % 97}." for i in range(n)]


def test_link_measures_match_the_subtrees_they_sum():
    """drop_chrome and unwrap_layout_tables read each block's text and link lengths, and whether
    it holds blocks of its own, from one pass over the page; each must equal what walking the
    block's subtree gives."""
    from lm_core.clean.extract import load_html
    from lm_core.clean.html_prep import _measure

    extra = (
        "<div><p>lead <a href='x.html'>one</a> and <a href='http://far.example/'>far <b>away</b></a></p>"
        "<a href='#'><a href='y.html'>nested</a></a><h2>title</h2><ul><li><a>no href</a></li></ul></div>"
        "<table><tr><th>a</th><td><p>one</p></td><td><p>one</p><div>two</div></td><td><hr></td><td>plain</td></tr>"
        "</table><ol><li>1</li></ol>"
    )
    page = _served_pydoc_page("json").replace("</body>", extra + "</body>")
    for tree in (load_html(page), load_html(f"<html><body>{page.split('<body>', 1)[-1]}")):
        _check_measures(tree, _measure(tree))


def _check_measures(tree, measures) -> None:
    from lm_core.clean.html_prep import _is_local, _text_length

    blocks = {"ul", "ol", "dl", "div", "p", "td", "th"}
    assert set(measures) == {el for el in tree.iter() if el.tag in blocks}
    assert {el.tag for el in measures} == blocks  # the page has each kind
    holds_blocks = "boolean(.//table|.//dl|.//ul|.//ol|.//pre|.//blockquote|.//hr|.//h1|.//h2|.//h3|.//h4|.//h5|.//h6)"
    for el, m in measures.items():
        links = [a for a in el.iter("a") if a.get("href") is not None and _text_length(a)]
        assert m.chars == _text_length(el)
        assert m.links == len(links)
        assert m.link_chars == sum(_text_length(a) for a in links)
        assert m.far_links == sum(1 for a in links if not _is_local(a.get("href")))
        assert m.blocks == (el.xpath(holds_blocks) or len(el.xpath(".//p|.//div")) > 1)
        assert m.structure == bool(el.xpath(".//h1|.//h2|.//h3|.//h4|.//h5|.//h6|.//pre|.//main"))
