"""Small things several test modules build the same way."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys


class Interrupted(Exception):
    """Stands for whatever stops a stage part-way: a crash, a kill, a full disk."""


class FailAfter:
    """A progress listener that crashes the stage after `n` units of work: an interruption."""

    def __init__(self, n: int):
        self.n = n

    def start(self, total, unit):
        pass

    def advance(self, k=1):
        self.n -= k
        if self.n < 0:
            raise Interrupted("the stage was interrupted")

    def describe(self, text):
        pass


def clean_doc(i: int, text: str, host: str = "example.org") -> dict:
    """A CLEAN_DOC row, as the clean stage writes it."""
    return {
        "id": hashlib.sha256(f"{i}:{text}".encode()).hexdigest()[:16],
        "url": f"https://{host}/{i}",
        "source": "urls",
        "text": text,
        "language": "en",
        "n_words": len(text.split()),
        "n_bytes": len(text.encode()),
    }


VERBS = ["reads", "writes", "checks", "sorts", "merges", "splits", "counts", "loads", "saves", "tests"]
THINGS = ["shards", "records", "tokens", "pages", "batches", "weights", "metrics", "files", "rows", "blocks"]


def write_topic_docs(folder, topics: list[str], sentences: int, seed: int = 0) -> None:
    """One markdown file per topic of `sentences` patterned sentences in paragraphs of three: a
    corpus a tiny model learns something from in a few steps."""
    import random

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for topic in topics:
        lines = [
            f"The {topic} {rng.choice(VERBS)} {rng.randint(2, 900)} {rng.choice(THINGS)} before it "
            f"{rng.choice(VERBS)} the {rng.choice(THINGS)} of step {rng.randint(1, 99)}."
            for _ in range(sentences)
        ]
        text = "\n\n".join(" ".join(lines[i : i + 3]) for i in range(0, sentences, 3))
        (folder / f"{topic}.md").write_text(text)


# a model trained in seconds on a few topic documents
TINY_SETTINGS = [
    "clean.dedup.near=false",
    "tokenize.vocab_size=512",
    "chunk.seq_len=32",
    "chunk.val_fraction=0.25",
    "model.preset=tiny",
    "pretrain.micro_batch=4",
    "tracking.system_metrics=false",
]


def pretrained_workspace(root, topics: list[str], sentences: int, *overrides: str, run_tags=None):
    """A workspace whose data stages ran on topic documents and which holds a tiny pretrained
    model: (config, workspace, chunk artifact, pretrain artifact)."""
    from lm_core.chunk.stage import run_chunk
    from lm_core.clean.stage import run_clean
    from lm_core.config import load_config
    from lm_core.crawl.stage import run_crawl
    from lm_core.tokenize.stage import run_tokenize
    from lm_core.train.stage import run_pretrain
    from lm_core.workspace import Workspace

    docs = root / "docs"
    write_topic_docs(docs, topics, sentences)
    cfg = load_config(
        None,
        [
            f"workspace={root / 'ws'}",
            f"crawl.files=[{{path: {docs}}}]",
            *TINY_SETTINGS,
            *overrides,
        ],
    )
    ws = Workspace(cfg.workspace)
    tokens = run_tokenize(cfg.tokenize, run_clean(cfg.clean, run_crawl(cfg.crawl, ws), ws), ws)
    chunk = run_chunk(cfg.chunk, tokens, ws)
    return cfg, ws, chunk, run_pretrain(cfg, chunk, ws, run_tags=run_tags)


_RENDER_PAGES = """
import contextlib, io, json, pydoc, sys
pages = {}
for name in sys.argv[1:]:
    with contextlib.redirect_stdout(io.StringIO()):
        pages[name] = pydoc._url_handler(name + ".html", "text/html")
sys.stdout.write(json.dumps(pages))
"""


def pydoc_pages(*modules: str) -> dict[str, str]:
    """module -> the page `python -m pydoc -p` serves for it (navigation bar included). Rendered
    in a child process: pydoc re-imports the modules it documents, which would leave the test
    process with two copies of, say, `json` (and two JSONDecodeError classes, so that an
    `except json.JSONDecodeError` elsewhere no longer catches what `json.loads` raises)."""
    out = subprocess.run([sys.executable, "-c", _RENDER_PAGES, *modules], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
