"""Extraction fidelity against ground truth: code kept verbatim, prose kept, boilerplate gone.

    .venv/bin/python bench/extract_fidelity.py                      # every site, every extractor
    .venv/bin/python bench/extract_fidelity.py --site sphinx --pages 20 --extractor lmforge,head
    .venv/bin/python bench/extract_fidelity.py --extractor head --head-rev 187eeef   # lm_core at a commit

1. Builds real documentation sites whose sources are known, from the docs their packages ship in
   their PyPI source distributions (`pip download --no-binary :all:`, pinned, unpacked under
   `bench/out/extract_fidelity/src`), with Sphinx and MkDocs installed in a virtual environment
   of the bench's own (`bench/out/venv-docs`, pinned in DOCS_PINS; never lmforge's):
   - sphinx:  Sphinx 7.4.7's own manual (its `sphinx13` theme, autodoc, viewcode),
   - flask:   Flask 3.0.3's docs (pallets-sphinx-themes, sphinx-tabs, log-cabinet),
   - click:   Click 8.1.7's docs (pallets theme; examples run by `click:example`/`click:run`),
   - pymdown: pymdown-extensions 10.11.2's docs (MkDocs + Material, tabs, admonitions, ...).
   Offline changes, all in SITES below: no intersphinx inventories (cross-references to other
   projects stay plain text); no graphviz diagrams (no `dot` here); for pymdown, no
   git-revision-date and minify plugins, and neither the `tools.collapse_code` extension nor
   the SECURITY.md snippet, which the sdist lacks (so its security page, all snippet, is left
   out). Sites are built once and cached; `--rebuild` builds them again.
2. Ground truth comes from the sources as the generator parsed them, never from the HTML the
   extractor reads:
   - Sphinx: an extension (written to `tools/fidelity_truth.py`) that on `doctree-resolved`
     dumps each page's code (`literal_block` and `doctest_block` nodes: `node.astext()` is
     exactly the code lines) and prose (`paragraph` nodes, admonitions, lists, tables and API
     descriptions included, toctree entries excluded) to `sites/<site>/truth/*.json`;
   - MkDocs: a hook (`tools/mkdocs_truth_hook.py`) that on `on_page_content` dumps the page's
     body as Python-Markdown rendered it, before the theme wraps it; its `<pre>` blocks are the
     code (math excepted) and its `<p>` the prose.
   Boilerplate: the visible text lines (block by block, and each link's text) of the built page
   that lie outside its main content element, minus the lines that also occur inside it. The
   main element is found structurally (`[role=main]` for Sphinx themes, Material's
   `article.md-content__inner`, else `<main>`); it is the bench's reference, the extractors are
   not told.
3. Serves each site on 127.0.0.1 (a ThreadingHTTPServer) and crawls it with lmforge's real crawl
   stage into a fresh workspace under `bench/out/extract_fidelity/ws/`; every crawled HTML page
   that has ground truth goes through each extractor:
   - lmforge: `lm_core.clean.extract.extract_text` of the working tree,
   - head: the same from lm_core as committed at `--head-rev` (default HEAD; `git archive`d to
     `trees/`), so that a change can be measured while it is being made,
   - trafilatura: plain `trafilatura.extract(html)`, default settings,
   - trafilatura-md: `trafilatura.extract(html, include_formatting=True, output_format="markdown")`;
   and, for lmforge and head, through that tree's whole `clean_document` with its default
   CleanConfig, to see which content pages the quality rules drop, and why. Each of the two runs
   in a child process that imports its own lm_core.
4. Measures per site and extractor:
   - code lines verbatim: share of the non-blank ground-truth code lines that occur as an exact
     whole line of the output (trailing spaces aside; multiset: a line that occurs 3 times must
     occur 3 times); "indented" is the same for lines that start with a space or tab;
   - prose recall: share of paragraphs found in the output, both with whitespace collapsed,
     Markdown's backslash escapes undone and the inline-formatting characters * and ` removed;
     and share of their words (multiset);
   - boilerplate lines leaked: output lines equal to a boilerplate line of their page (list,
     heading and quote markers aside), the pages they leak on, the 10 commonest;
   - permalink marks left: "¶" and "§" in the output;
   - content pages dropped by the clean stage's rules: count, reasons, examples (a content page
     has 50 words or more of ground truth; smaller ones, tables of contents, are stubs that the
     rules may drop, counted apart).
   It prints a table per site and for all sites with the targets beside it, the worst pages of
   each extractor, and writes every page's details (worst first: lost code lines, missed
   paragraphs, leaked lines), the summary and the outputs themselves under
   `bench/out/extract_fidelity/` (`results.json`, `pages-<extractor>.json`, `outputs/`).

The first run downloads four sdists and 48 pinned packages from PyPI and builds the sites (2-3
minutes on two busy cores); later runs reuse them and take 2-4 minutes for the 245 pages with all
four extractors (crawls: seconds; `--pages 5`: under 20 s).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OUT = REPO / "bench" / "out" / "extract_fidelity"
DOCS_VENV = REPO / "bench" / "out" / "venv-docs"
QUIET_ENV = {
    "DO_NOT_TRACK": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PYTHONWARNINGS": "ignore",
    "SOURCE_DATE_EPOCH": "1704067200",  # 2024-01-01: dates in the built pages do not change
}

# Everything the docs virtual environment holds, pinned to releases of autumn 2024 (when these
# docs were current), installed without dependency resolution and checked with `pip check`: the
# sites, and so the figures, are the same on every machine.
DOCS_PINS = """
alabaster==0.7.16 babel==2.16.0 blinker==1.9.0 certifi==2024.8.30 charset-normalizer==3.4.0 click==8.1.7
colorama==0.4.6 docutils==0.21.2 Flask==3.0.3 ghp-import==2.1.0 idna==3.10 imagesize==1.4.1
itsdangerous==2.2.0 Jinja2==3.1.4 Markdown==3.7 MarkupSafe==3.0.2 mergedeep==1.3.4 mkdocs==1.6.1
mkdocs-get-deps==0.2.0 mkdocs-material==9.5.40 mkdocs-material-extensions==1.3.1 packaging==24.1
paginate==0.5.7 Pallets-Sphinx-Themes==2.1.3 pathspec==0.12.1 platformdirs==4.3.6 Pygments==2.18.0
pymdown-extensions==10.11.2 python-dateutil==2.9.0.post0 PyYAML==6.0.2 pyyaml_env_tag==0.1
regex==2024.9.11 requests==2.32.3 six==1.16.0 snowballstemmer==2.2.0 Sphinx==7.4.7 sphinx-issues==3.0.1
sphinx-tabs==3.4.5 sphinxcontrib-applehelp==2.0.0 sphinxcontrib-devhelp==2.0.0 sphinxcontrib-htmlhelp==2.1.0
sphinxcontrib-jsmath==1.0.1 sphinxcontrib-log-cabinet==1.0.1 sphinxcontrib-qthelp==2.0.0
sphinxcontrib-serializinghtml==2.0.0 urllib3==2.2.3 watchdog==5.0.3 Werkzeug==3.0.4
""".split()


@dataclass(frozen=True)
class Site:
    name: str
    sdist: str  # pinned requirement whose source distribution holds the docs
    generator: str  # "sphinx" or "mkdocs"
    source: str  # in the unpacked sdist: the Sphinx source folder, or the mkdocs.yml
    title: str
    drop_extensions: tuple[str, ...] = ()  # Sphinx extensions that cannot work offline here
    mkdocs_edits: tuple[tuple[str, str], ...] = ()  # (regex, replacement) on mkdocs.yml, each must match
    skip_pages: tuple[str, ...] = ()  # pages left out of the measures, each with its reason in SITES


SITES = {
    "sphinx": Site(
        "sphinx",
        "sphinx==7.4.7",
        "sphinx",
        "doc",
        "Sphinx 7.4.7 manual",
        drop_extensions=("sphinx.ext.graphviz", "sphinx.ext.inheritance_diagram"),
    ),
    "flask": Site("flask", "flask==3.0.3", "sphinx", "docs", "Flask 3.0.3 docs"),
    "click": Site("click", "click==8.1.7", "sphinx", "docs", "Click 8.1.7 docs"),
    "pymdown": Site(
        "pymdown",
        "pymdown-extensions==10.11.2",
        "mkdocs",
        "mkdocs.yml",
        "pymdown-extensions 10.11.2 docs (MkDocs + Material)",
        mkdocs_edits=(
            # a snippet (SECURITY.md) and a local extension that the sdist does not ship
            (r"\n      check_paths: true\n", "\n      check_paths: false\n"),
            (r"\n  - tools\.collapse_code:\n      expand_text: ''\n      collapse_text: ''\n", "\n"),
            # plugins that need git history or only shrink the HTML; the truth hook joins
            (r"\nplugins:\n(?:.*\n?)*\Z", "\nplugins:\n  - search\nhooks:\n  - {hook}\n"),
        ),
        skip_pages=("about/security/index.html",),  # all its content is the missing SECURITY.md
    ),
}

# ----------------------------------------------------------------------------- ground-truth dumpers

# Written to tools/ and loaded by the Sphinx builds (added to each conf.py's extensions).
SPHINX_TRUTH_EXTENSION = r'''
"""Written by lmforge's bench/extract_fidelity.py: each page's code blocks and paragraphs, as
Sphinx parsed them, to <fidelity_truth_dir>/<docname>.json."""
import json
import os

from docutils import nodes
from sphinx import addnodes

# the innermost of these around a paragraph names its kind
_KINDS = (
    (nodes.Admonition, "admonition"), (nodes.table, "table"), (addnodes.desc_content, "api"),
    (nodes.field_body, "field"), (nodes.footnote, "footnote"), (nodes.list_item, "list"),
    (nodes.definition, "list"),
)


def _kind(node):
    if any(isinstance(a, nodes.topic) and "contents" in a["classes"] for a in _ancestors(node)):
        return "contents"  # a `.. contents::` table of contents inside the page
    parent = node.parent
    while parent is not None:
        for cls, name in _KINDS:
            if isinstance(parent, cls):
                return name
        parent = parent.parent
    return "body"


def _dump(app, doctree, docname):
    code = [n.astext() for n in doctree.findall(lambda n: isinstance(n, (nodes.literal_block, nodes.doctest_block)))]
    paragraphs = []
    for node in doctree.findall(nodes.paragraph):
        # toctree entries are navigation lists, and system messages are build warnings
        if isinstance(node, addnodes.compact_paragraph) or any(
            isinstance(a, nodes.system_message) for a in _ancestors(node)
        ):
            continue
        paragraphs.append({"text": node.astext(), "kind": _kind(node)})
    path = os.path.join(app.config.fidelity_truth_dir, docname + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"page": app.builder.get_target_uri(docname), "code": code, "paragraphs": paragraphs}, f)


def _ancestors(node):
    while node.parent is not None:
        node = node.parent
        yield node


def setup(app):
    app.add_config_value("fidelity_truth_dir", "", "env")
    app.connect("doctree-resolved", _dump)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
'''

# Listed under `hooks:` of the MkDocs config.
MKDOCS_TRUTH_HOOK = r'''
"""Written by lmforge's bench/extract_fidelity.py: each page's body as Python-Markdown rendered
it (before the theme), to $FIDELITY_TRUTH_DIR/<source path>.json."""
import json
import os


def on_page_content(html, page, config, files, **kwargs):
    path = os.path.join(os.environ["FIDELITY_TRUTH_DIR"], page.file.src_uri + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"page": page.url, "content_html": html}, f)
    return html
'''

CONF_MARK = "# --- appended by lmforge's bench/extract_fidelity.py"

# ----------------------------------------------------------------------------- building the sites


def _run(cmd: list[str], log: Path, **kwargs) -> None:
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        proc = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **QUIET_ENV, **kwargs.pop("env", {})}, **kwargs
        )
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n... {log}:\n{tail}")


def docs_python() -> Path:
    """The bench's own virtual environment with the pinned documentation tools."""
    python = DOCS_VENV / "bin" / "python"
    stamp = DOCS_VENV / ".pins"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(DOCS_PINS):
        return python
    print(f"creating {DOCS_VENV.relative_to(REPO)} (Sphinx, MkDocs and friends, pinned) ...", flush=True)
    shutil.rmtree(DOCS_VENV, ignore_errors=True)
    DOCS_VENV.parent.mkdir(parents=True, exist_ok=True)
    log = DOCS_VENV.parent / "venv-docs.log"
    _run([sys.executable, "-m", "venv", str(DOCS_VENV)], log)
    _run([str(python), "-m", "pip", "install", "--no-deps", *DOCS_PINS], log)
    _run([str(python), "-m", "pip", "check"], log)  # the pins are complete and agree
    stamp.write_text("\n".join(DOCS_PINS))
    return python


def unpack_sdist(python: Path, site: Site) -> Path:
    """The pinned sdist, downloaded once and unpacked pristine; returns its root folder."""
    name, version = site.sdist.split("==")
    root = OUT / "src" / f"{name}-{version}"
    if (root / ".unpacked").exists():
        return root
    sdists = OUT / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    log = OUT / "sdist.log"

    def downloaded() -> list[Path]:  # sdist names spell the project with "_" or "-"
        return [p for p in sdists.glob("*.tar.gz") if p.name.lower().replace("_", "-").startswith(f"{name}-{version}.")]

    wanted = downloaded()
    if not wanted:
        pip = [str(python), "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", site.sdist, "-d", str(sdists)]
        _run(pip, log)
        wanted = downloaded()
    shutil.rmtree(root, ignore_errors=True)
    tmp = OUT / "src" / ".unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(wanted[0]) as tar:
        tar.extractall(tmp, filter="data")
    (inner,) = tmp.iterdir()  # an sdist holds one top folder
    inner.rename(root)
    tmp.rmdir()
    (root / ".unpacked").touch()
    return root


def write_tools() -> Path:
    tools = OUT / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    for name, text in (("fidelity_truth.py", SPHINX_TRUTH_EXTENSION), ("mkdocs_truth_hook.py", MKDOCS_TRUTH_HOOK)):
        if not (tools / name).exists() or (tools / name).read_text() != text:
            (tools / name).write_text(text)
    return tools


def site_dirs(site: Site) -> tuple[Path, Path, Path]:
    base = OUT / "sites" / site.name
    return base, base / "html", base / "truth"


def build_site(python: Path, site: Site, rebuild: bool) -> None:
    """Build `site` with its ground truth, unless a build of the same inputs is there."""
    base, html, truth = site_dirs(site)
    tools = write_tools()
    key = hashlib.sha256(
        json.dumps([repr(site), DOCS_PINS, SPHINX_TRUTH_EXTENSION, MKDOCS_TRUTH_HOOK]).encode()
    ).hexdigest()
    stamp = base / ".built"
    if not rebuild and stamp.exists() and stamp.read_text() == key:
        return
    root = unpack_sdist(python, site)
    shutil.rmtree(base, ignore_errors=True)
    truth.mkdir(parents=True)
    log = base / "build.log"
    print(f"building {site.name}: {site.title} (log: {log.relative_to(REPO)}) ...", flush=True)
    started = time.perf_counter()
    if site.generator == "sphinx":
        _build_sphinx(python, site, root, tools, base, log)
    else:
        _build_mkdocs(python, site, root, tools, base, log)
    pages = len(list(truth.rglob("*.json")))
    print(f"  built {pages} pages with ground truth in {time.perf_counter() - started:.0f} s", flush=True)
    stamp.write_text(key)


def _build_sphinx(python: Path, site: Site, root: Path, tools: Path, base: Path, log: Path) -> None:
    src = root / site.source
    conf = src / "conf.py"
    upstream = src / "conf.py.upstream"
    if not upstream.exists():
        shutil.copy2(conf, upstream)
    overrides = f"""
{CONF_MARK}: an offline build that also dumps ground truth
import sys as _sys
_sys.path.insert(0, {str(tools)!r})
extensions = [_e for _e in extensions if _e not in {list(site.drop_extensions)!r}] + ["fidelity_truth"]
intersphinx_mapping = {{}}  # no network: references to other projects' docs stay plain text
fidelity_truth_dir = {str(base / "truth")!r}
"""
    conf.write_text(upstream.read_text() + overrides)
    _run(
        [str(python), "-m", "sphinx", "-b", "html", "-E", "-q", "-j", "1",
         "-d", str(base / "doctrees"), str(src), str(base / "html")],
        log,
        cwd=src,
    )  # fmt: skip


def _build_mkdocs(python: Path, site: Site, root: Path, tools: Path, base: Path, log: Path) -> None:
    config = (root / site.source).read_text()
    for pattern, replacement in site.mkdocs_edits:
        config, n = re.subn(pattern, replacement.format(hook=tools / "mkdocs_truth_hook.py"), config)
        if n != 1:
            raise SystemExit(f"{site.name}: {site.source} no longer has what {pattern!r} edits")
    bench_config = root / "mkdocs.fidelity.yml"
    bench_config.write_text(config)
    # `python -m mkdocs` from the sdist root: the config names modules of its tools/ folder
    _run(
        [str(python), "-m", "mkdocs", "build", "-q", "-f", str(bench_config), "-d", str(base / "html")],
        log,
        cwd=root,
        env={"FIDELITY_TRUTH_DIR": str(base / "truth")},
    )


# ----------------------------------------------------------------------------- ground truth


@dataclass
class PageTruth:
    path: str  # the page's file under the site root, e.g. "usage/quickstart.html"
    code: list[str]  # code blocks, each its exact text
    paragraphs: list[dict]  # {"text", "kind"}
    boilerplate: set[str] = field(default_factory=set)  # normalised lines outside the main element


def _page_file(url_path: str) -> str:
    """'/' -> 'index.html', '/a/b/' -> 'a/b/index.html', '/x.html' -> 'x.html'."""
    path = url_path.lstrip("/")
    return path + "index.html" if path == "" or path.endswith("/") else path


def _html_kind(p) -> str:
    """The kinds the Sphinx extension gives, for a paragraph of rendered Markdown."""
    for a in p.iterancestors():
        if a.tag == "details" or "admonition" in a.get("class", "").split():
            return "admonition"
        if a.tag in ("td", "th"):
            return "table"
        if a.tag in ("li", "dd"):
            return "list"
    return "body"


def load_truth(site: Site) -> dict[str, PageTruth]:
    from lxml import html as lxml_html

    _, html_dir, truth_dir = site_dirs(site)
    pages = {}
    for path in sorted(truth_dir.rglob("*.json")):
        data = json.loads(path.read_text())
        if site.generator == "sphinx":
            page = PageTruth(_page_file(data["page"]), data["code"], data["paragraphs"])
        else:
            body = lxml_html.fragment_fromstring(data["content_html"] or "<div></div>", create_parent="div")
            # math rendered into <pre> blocks (arithmatex) is not code
            code = [pre.text_content() for pre in body.xpath("//pre[not(contains(@class, 'arithmatex'))]")]
            paras = [{"text": p.text_content(), "kind": _html_kind(p)} for p in body.xpath("//p[not(ancestor::pre)]")]
            page = PageTruth(_page_file("/" + data["page"]), code, paras)
        built = html_dir / page.path
        if built.exists():
            page.boilerplate = boilerplate_lines(built.read_text(encoding="utf-8"))
        pages[page.path] = page
    return pages


# The main content element, looked for in this order.
MAIN_XPATHS = (
    "//*[@role='main']",  # Sphinx's basic theme and those built on it
    "//article[contains(concat(' ', normalize-space(@class), ' '), ' md-content__inner ')]",  # Material
    "//main",
)
_INVISIBLE = {"script", "style", "noscript", "template", "svg", "head", "title", "meta", "link"}
_BLOCKS = {
    "address", "article", "aside", "blockquote", "br", "button", "caption", "dd", "details", "dialog", "div", "dl",
    "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
    "label", "legend", "li", "main", "nav", "ol", "option", "p", "pre", "section", "select", "summary", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}  # fmt: skip
_NO_MARKS = str.maketrans("", "", "¶§")
_MD_MARKERS = re.compile(r"^(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*)+")


def norm_line(line: str) -> str:
    """A line as compared with boilerplate: list, heading and quote markers and permalink marks
    off, spaces collapsed (so a heading "Usage¶" in the content is the sidebar's "Usage")."""
    return " ".join(_MD_MARKERS.sub("", line.strip()).translate(_NO_MARKS).split())


def _visible_text(element, skip, parts: list[str]) -> None:
    tag = element.tag if isinstance(element.tag, str) else ""
    if element is skip or tag in _INVISIBLE or not tag:
        parts.append("\n" if element is skip else "")
    else:
        block = tag in _BLOCKS
        parts.append("\n" if block else "")
        parts.append(element.text or "")
        for child in element:
            _visible_text(child, skip, parts)
        parts.append("\n" if block else "")
    parts.append(element.tail or "")


def visible_lines(element, skip=None) -> set[str]:
    """The normalised lines of text a browser shows in `element` (without `skip`), block by block."""
    parts: list[str] = []
    _visible_text(element, skip, parts)
    lines = {norm_line(line) for line in "".join(parts).split("\n")}
    return {line for line in lines if re.search(r"\w", line)}


def boilerplate_lines(page_html: str) -> set[str]:
    from lxml import html as lxml_html

    tree = lxml_html.document_fromstring(page_html)
    main = next((found[0] for xp in MAIN_XPATHS if (found := tree.xpath(xp))), None)
    if main is None:
        return set()
    content = visible_lines(main)
    outside = visible_lines(tree.body, skip=main)
    # each link outside the content on its own too: nav entries may come out one per line
    for link in tree.body.iter("a"):
        if not any(a is main for a in link.iterancestors()):
            text = norm_line(link.text_content())
            if re.search(r"\w", text):
                outside.add(text)
    return outside - content


# ----------------------------------------------------------------------------- serving and crawling


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def crawl_site(site: Site) -> tuple[Path, list[dict]]:
    """Serve the built site on 127.0.0.1 and crawl it with lmforge's crawl stage; the crawl
    artifact's folder and its documents."""
    from lm_core.config import CrawlConfig
    from lm_core.crawl.stage import run_crawl
    from lm_core.schemas import RAW_DOC
    from lm_core.shards import read_shard, shard_paths
    from lm_core.workspace import Workspace

    _, html_dir, _ = site_dirs(site)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(html_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    root = f"http://127.0.0.1:{server.server_address[1]}/"
    # the loopback switch is being split out of allow_private: set whichever this lmforge has
    loopback = "allow_loopback" if "allow_loopback" in CrawlConfig.model_fields else "allow_private"
    cfg = CrawlConfig(urls=[root], max_pages=20_000, max_depth=100, **{loopback: True})
    ws_dir = OUT / "ws" / site.name
    shutil.rmtree(ws_dir, ignore_errors=True)  # a fresh crawl: the port, and maybe the site, changed
    started = time.perf_counter()
    try:
        ref = run_crawl(cfg, Workspace(ws_dir))
    finally:
        server.shutdown()
        server.server_close()
    docs = [row for path in shard_paths(ref.dir / "docs") for row in read_shard(path, RAW_DOC).to_pylist()]
    failures = ref.stats.get("failures", "?")
    print(f"  crawled {len(docs)} documents ({failures} failures) in {time.perf_counter() - started:.0f} s", flush=True)
    for doc in docs:
        doc["path"] = _page_file(doc["url"][len(root) - 1 :].split("#")[0].split("?")[0])
    return ref.dir, docs


# ----------------------------------------------------------------------------- extractors

EXTRACTORS = ("lmforge", "head", "trafilatura", "trafilatura-md")
# lmforge's own, each run with the whole clean stage of one tree of lm_core (extract, decode,
# quality rules, default config): the working tree's, or the package as committed at --head-rev
LMFORGE_VARIANTS = ("lmforge", "head")


def plain_extractors(names: list[str]) -> dict[str, Callable[[str], str]]:
    import trafilatura

    out: dict[str, Callable[[str], str]] = {}
    if "trafilatura" in names:
        out["trafilatura"] = lambda html: trafilatura.extract(html) or ""
    if "trafilatura-md" in names:
        out["trafilatura-md"] = lambda html: (
            trafilatura.extract(html, include_formatting=True, output_format="markdown") or ""
        )
    return out


def lm_core_tree(variant: str, head_rev: str) -> Path:
    """The folder whose lm_core the variant imports: the repo, or lm_core as committed at `head_rev`
    (extracted once per commit)."""
    if variant == "lmforge":
        return REPO
    git = ["git", "-C", str(REPO)]
    sha = subprocess.run([*git, "rev-parse", head_rev], capture_output=True, text=True, check=True).stdout.strip()
    tree = OUT / "trees" / sha[:12]
    if not (tree / "lm_core").exists():
        archive = subprocess.run([*git, "archive", "--format=tar", sha, "lm_core"], capture_output=True, check=True)
        tmp = tree.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(tree)
    return tree


def run_variant(variant: str, tree: Path, crawl_dir: Path, urls: list[str], clean: bool) -> dict[str, dict]:
    """Extract (and clean) the pages at `urls` with `tree`'s lm_core, in a child process so that
    each variant imports its own package; {url: {"text", "seconds", "error", "dropped"}}."""
    job = OUT / f"child-{variant}.json"
    job.write_text(json.dumps({"tree": str(tree), "crawl": str(crawl_dir), "urls": urls, "clean": clean}))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", str(job)], env={**os.environ, **QUIET_ENV})
    if proc.returncode != 0:
        raise SystemExit(f"{variant}: the extraction process failed ({proc.returncode})")
    done = "extracted and cleaned" if clean else "extracted"
    print(f"  {variant}: {len(urls)} pages {done} in {time.perf_counter() - started:.0f} s", flush=True)
    results = json.loads(job.with_suffix(".out.json").read_text())
    job.unlink()
    job.with_suffix(".out.json").unlink()
    return results


def child_run(job_file: str) -> None:
    """In a child process: run one lm_core tree's extract_text and clean_document on the job's pages."""
    job = json.loads(Path(job_file).read_text())
    sys.path.insert(0, job["tree"])  # before the repo: this tree's lm_core is the one imported
    from lm_core.clean.decode import decode_body
    from lm_core.clean.extract import extract_text
    from lm_core.clean.pipeline import clean_document
    from lm_core.config import CleanConfig
    from lm_core.shards import read_shard, shard_paths

    assert Path(sys.modules["lm_core"].__file__).is_relative_to(job["tree"])
    wanted = set(job["urls"])
    cfg = CleanConfig()
    results = {}
    for path in shard_paths(Path(job["crawl"]) / "docs"):
        for doc in read_shard(path).to_pylist():
            if doc["url"] not in wanted:
                continue
            html = decode_body(doc["body"], doc["declared_encoding"], doc["detected_encoding"]).text
            started = time.perf_counter()
            try:
                text, error = extract_text(html, doc["content_type"]), None
            except Exception as e:  # the extractor under work may fail on a page: recorded, not fatal
                text, error = "", f"{type(e).__name__}: {e}"
            row = {"text": text, "seconds": time.perf_counter() - started, "error": error, "dropped": None}
            if job["clean"]:
                args = (doc["body"], doc["content_type"], doc["declared_encoding"], doc["detected_encoding"], cfg)
                verdict = clean_document(*args)
                if hasattr(verdict, "reason"):  # a Dropped
                    row["dropped"] = {"reason": verdict.reason, "detail": verdict.detail}
            results[doc["url"]] = row
    Path(job_file).with_suffix(".out.json").write_text(json.dumps(results))


# ----------------------------------------------------------------------------- scoring

_FORMATTING = str.maketrans("", "", "*`")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>])")  # Markdown's backslash escapes: "import\_name"
PERMALINK_MARKS = "¶§"
# A page whose ground truth (prose and code) has fewer words is a stub (a table of contents, a
# redirect): the clean stage may drop it. 50 is the default CleanConfig's min_words.
CONTENT_WORDS = 50


def prose_norm(text: str) -> str:
    """Text as prose is compared: Markdown escapes and inline formatting (* and `) off, spaces collapsed."""
    return " ".join(_MD_ESCAPE.sub(r"\1", text).translate(_FORMATTING).split())


def words(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


def _multiset_missing(need: list[str], have: Counter) -> list[str]:
    missing = []
    for line, n in Counter(need).items():
        missing += [line] * max(0, n - have[line])
    return missing


def score_page(truth: PageTruth, output: str) -> dict:
    lines = [line.rstrip() for line in output.split("\n")]
    have = Counter(lines)
    code = [line.rstrip() for block in truth.code for line in block.split("\n") if line.strip()]
    indented = [line for line in code if line[0] in " \t"]
    lost_code = _multiset_missing(code, have)
    lost_indented = _multiset_missing(indented, have)

    paras = [p for p in truth.paragraphs if prose_norm(p["text"])]
    flat = prose_norm(output)
    missed = [p for p in paras if prose_norm(p["text"]) not in flat]
    para_words = words(" ".join(p["text"] for p in paras))
    truth_words = sum(para_words.values()) + sum(words(line).total() for line in code)
    out_words = words(output)
    words_found = sum(min(n, out_words[w]) for w, n in para_words.items())

    leaked = [norm_line(line) for line in lines if norm_line(line) in truth.boilerplate]
    marks = sum(output.count(c) for c in PERMALINK_MARKS)
    return {
        "code_lines": len(code),
        "code_kept": len(code) - len(lost_code),
        "indented_lines": len(indented),
        "indented_kept": len(indented) - len(lost_indented),
        "paragraphs": len(paras),
        "paragraphs_found": len(paras) - len(missed),
        "words": sum(para_words.values()),
        "words_found": words_found,
        "content_page": truth_words >= CONTENT_WORDS,
        "leaked": len(leaked),
        "permalink_marks": marks,
        "output_chars": len(output),
        "lost_code_examples": lost_code[:8],
        "lost_indented_examples": lost_indented[:5],
        "missed_paragraph_examples": [f"[{p['kind']}] {prose_norm(p['text'])[:160]}" for p in missed[:5]],
        "missed_by_kind": dict(Counter(p["kind"] for p in missed)),
        "leaked_lines": leaked,
    }


def badness(page: dict) -> int:
    """How much went wrong on a page: lost code lines, missed paragraphs, leaked lines, a drop
    (permalink marks are counted apart: every heading has one)."""
    return (
        page["code_lines"]
        - page["code_kept"]
        + page["paragraphs"]
        - page["paragraphs_found"]
        + page["leaked"]
        + (20 if page.get("dropped") and page["content_page"] else 0)
    )


def summarise(pages: list[dict]) -> dict:
    total = Counter()
    for p in pages:
        for key in ("code_lines", "code_kept", "indented_lines", "indented_kept", "paragraphs", "paragraphs_found",
                    "words", "words_found", "leaked", "permalink_marks"):  # fmt: skip
            total[key] += p[key]

    def pct(part: str, whole: str) -> float | None:
        return round(100 * total[part] / total[whole], 1) if total[whole] else None

    leaked_lines = Counter(line for p in pages for line in p["leaked_lines"])
    cleaned = [p for p in pages if "dropped" in p]
    dropped = [p for p in cleaned if p["dropped"] and p["content_page"]]
    stubs_dropped = [p for p in cleaned if p["dropped"] and not p["content_page"]]
    return {
        "pages": len(pages),
        **total,
        "code_verbatim_pct": pct("code_kept", "code_lines"),
        "indented_verbatim_pct": pct("indented_kept", "indented_lines"),
        "prose_recall_pct": pct("paragraphs_found", "paragraphs"),
        "word_recall_pct": pct("words_found", "words"),
        "pages_leaking": sum(1 for p in pages if p["leaked"]),
        "commonest_leaks": leaked_lines.most_common(10),
        "pages_cleaned": len(cleaned) if cleaned else None,
        "dropped": len(dropped) if cleaned else None,
        "stub_pages": sum(1 for p in pages if not p["content_page"]),
        "stub_pages_dropped": len(stubs_dropped) if cleaned else None,
        "drop_reasons": dict(Counter(p["dropped"]["reason"] for p in dropped)),
        "drop_examples": [{"url": p["url"], **p["dropped"]} for p in dropped[:5]],
        "extract_errors": sum(1 for p in pages if p.get("error")),
        "seconds": round(sum(p["seconds"] for p in pages), 1),
    }


# ----------------------------------------------------------------------------- report

TARGETS = (
    ("code lines verbatim %", "code_verbatim_pct", ">= 98"),
    ("indented code lines verbatim %", "indented_verbatim_pct", ">= 98"),
    ("prose paragraphs found %", "prose_recall_pct", ">= 95"),
    ("prose words found %", "word_recall_pct", ""),
    ("boilerplate lines leaked", "leaked", "0"),
    ("  pages with leaks", "pages_leaking", "0"),
    ("permalink marks left", "permalink_marks", "0"),
    ("content pages dropped by clean", "dropped", "0"),
    ("  stub pages dropped (ok)", "stub_pages_dropped", ""),
    ("pages the extractor failed on", "extract_errors", "0"),
    ("extraction seconds", "seconds", ""),
)


def print_table(title: str, summaries: dict[str, dict]) -> None:
    names = list(summaries)
    first = next(iter(summaries.values()))
    print(
        f"\n{title}: {first['pages']} pages ({first['stub_pages']} stubs under {CONTENT_WORDS} words), "
        f"{first['code_lines']} code lines ({first['indented_lines']} indented), {first['paragraphs']} paragraphs"
    )
    width = max(14, *(len(n) + 2 for n in names))
    print(f"{'':32}{'target':>8}" + "".join(f"{n:>{width}}" for n in names))
    for label, key, target in TARGETS:
        cells = "".join(f"{'-' if s[key] is None else s[key]:>{width}}" for s in summaries.values())
        print(f"{label:32}{target:>8}{cells}")


def print_worst(name: str, pages: list[dict], n: int) -> None:
    print(f"\nworst pages for {name} (lost code lines, missed paragraphs, leaked lines, a drop):")
    for p in sorted(pages, key=badness, reverse=True)[:n]:
        if not badness(p):
            break
        drop = p.get("dropped")
        print(f"  {p['site']}/{p['path']}: code {p['code_kept']}/{p['code_lines']} "
              f"(indented {p['indented_kept']}/{p['indented_lines']}), "
              f"paragraphs {p['paragraphs_found']}/{p['paragraphs']}, leaked {p['leaked']}"
              + (f", dropped: {drop['reason']}" if drop else ""))  # fmt: skip
        for line in p["lost_code_examples"][:2]:
            print(f"      lost code: {line[:100]!r}")
        for line in p["missed_paragraph_examples"][:1]:
            print(f"      missed:    {line[:100]!r}")
        for line in p["leaked_lines"][:2]:
            print(f"      leaked:    {line[:100]!r}")
        if drop:
            print(f"      dropped:   {drop['detail'][:100]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=",".join(SITES), help=f"comma-separated, of: {', '.join(SITES)}")
    parser.add_argument("--pages", type=int, default=None, help="only N pages per site, spread over it")
    parser.add_argument(
        "--extractor", default=",".join(EXTRACTORS), help=f"comma-separated, of: {', '.join(EXTRACTORS)}"
    )
    parser.add_argument("--head-rev", default="HEAD", help="the commit whose lm_core the `head` extractor runs")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean stage's rules (clean_document)")
    parser.add_argument("--rebuild", action="store_true", help="build the sites again")
    parser.add_argument("--worst", type=int, default=10, help="how many worst pages to print")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(QUIET_ENV)
    if args.child:
        child_run(args.child)
        return

    names = [s.strip() for s in args.site.split(",") if s.strip()]
    for name in names:
        if name not in SITES:
            raise SystemExit(f"unknown site {name!r}: choose from {', '.join(SITES)}")
    extractor_names = [e.strip() for e in args.extractor.split(",") if e.strip()]
    for name in extractor_names:
        if name not in EXTRACTORS:
            raise SystemExit(f"unknown extractor {name!r}: choose from {', '.join(EXTRACTORS)}")
    OUT.mkdir(parents=True, exist_ok=True)

    python = docs_python()
    started = time.perf_counter()
    all_pages: dict[str, list[dict]] = {e: [] for e in extractor_names}
    site_summaries = {}
    for name in names:
        site = SITES[name]
        build_site(python, site, args.rebuild)
        truth = load_truth(site)
        crawl_dir, docs = crawl_site(site)
        html_docs = select_pages(site, docs, truth, args.pages)
        print(f"  {len(html_docs)} crawled pages have ground truth ({len(truth)} built pages have it)", flush=True)
        site_pages = evaluate_site(site, crawl_dir, html_docs, truth, extractor_names, args)
        for e, pages in site_pages.items():
            all_pages[e] += pages
        site_summaries[name] = {e: summarise(pages) for e, pages in site_pages.items()}
        print_table(f"{name} ({site.title})", site_summaries[name])

    totals = {e: summarise(pages) for e, pages in all_pages.items()}
    if len(names) > 1:
        print_table("all sites", totals)
    for e, s in totals.items():
        leaks = ", ".join(f"{line[:40]!r} x{n}" for line, n in s["commonest_leaks"][:10]) or "none"
        print(f"\n{e}: commonest leaked lines: {leaks}")
        if s["dropped"]:
            examples = "; ".join(f"{d['url'].split('/', 3)[-1]} ({d['detail']})" for d in s["drop_examples"][:3])
            print(f"{e}: content pages dropped by clean: {s['drop_reasons']}; e.g. {examples}")

    for name in extractor_names:
        print_worst(name, all_pages[name], args.worst)

    for stale in OUT.glob("pages-*.json"):  # an earlier run's, maybe of other extractors
        stale.unlink()
    for e, pages in all_pages.items():
        (OUT / f"pages-{e}.json").write_text(json.dumps(sorted(pages, key=badness, reverse=True), indent=1))
    results = {
        "sites": {
            n: {"title": SITES[n].title, "sdist": SITES[n].sdist, "summary": s} for n, s in site_summaries.items()
        },
        "all": totals,
        "head_rev": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", args.head_rev], capture_output=True, text=True
        ).stdout.strip(),
        "args": vars(args),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\ndetails: {(OUT / 'results.json').relative_to(REPO)}, pages-<extractor>.json (worst first), outputs/")
    print(f"total {time.perf_counter() - started:.0f} s")


def select_pages(site: Site, docs: list[dict], truth: dict[str, PageTruth], limit: int | None) -> list[dict]:
    """The crawled HTML pages that have ground truth, one document per page ("/" and
    "/index.html" are one), in path order; with `limit`, that many spread evenly over the site."""
    by_path: dict[str, dict] = {}
    for doc in sorted(docs, key=lambda d: len(d["url"])):
        html = (doc["content_type"] or "").startswith("text/html")
        if html and doc["path"] in truth and doc["path"] not in site.skip_pages:
            by_path.setdefault(doc["path"], doc)
    pages = [by_path[p] for p in sorted(by_path)]
    if limit and limit < len(pages):
        pages = [pages[i * len(pages) // limit] for i in range(limit)]
    return pages


def evaluate_site(
    site: Site, crawl_dir: Path, docs: list[dict], truth: dict[str, PageTruth], names: list[str], args
) -> dict[str, list[dict]]:
    from lm_core.clean.decode import decode_body

    outputs: dict[str, dict[str, dict]] = {}
    for name in names:
        if name in LMFORGE_VARIANTS:
            tree = lm_core_tree(name, args.head_rev)
            outputs[name] = run_variant(name, tree, crawl_dir, [d["url"] for d in docs], clean=not args.no_clean)
    plain = plain_extractors(names)
    for name in plain:
        outputs[name] = {}
    for doc in docs:
        html = decode_body(doc["body"], doc["declared_encoding"], doc["detected_encoding"]).text
        for name, extract in plain.items():
            started = time.perf_counter()
            text = extract(html)
            outputs[name][doc["url"]] = {"text": text, "seconds": time.perf_counter() - started}

    results: dict[str, list[dict]] = {}
    for name in names:
        results[name] = []
        for doc in docs:
            page, out = truth[doc["path"]], outputs[name][doc["url"]]
            row = {"site": site.name, "path": page.path, "url": doc["url"], **score_page(page, out["text"])}
            row["seconds"] = out["seconds"]
            if out.get("error"):
                row["error"] = out["error"]
            if name in LMFORGE_VARIANTS and not args.no_clean:
                row["dropped"] = out["dropped"]
            out_file = OUT / "outputs" / site.name / name / (page.path + ".txt")
            out_file.parent.mkdir(parents=True, exist_ok=True)
            out_file.write_text(out["text"])
            results[name].append(row)
    return results


if __name__ == "__main__":
    main()
