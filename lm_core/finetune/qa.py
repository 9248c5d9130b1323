"""A question/answer chat set built from the clean corpus, for when the user gives none.

The demo corpus is Python's documentation as pydoc renders it, reduced to text by the clean
stage: a title line (`json (version 2.0.9)`), the module's docstring, then sections ("Classes",
"Functions", "Data") where each documented name stands on a line of its own, as its signature,
followed by its description:

    dumps(obj, *, skipkeys=False, ensure_ascii=True, ...)
    Serialize ``obj`` to a JSON formatted ``str``.

Those lines become questions with answers taken word for word from the corpus (deterministic
rules, no model):

    module     title + docstring            "What is the `json` module for?"
    class      `class X(...)` + passage     "What is `json.JSONDecoder`?"
    function   signature + passage          "What does `json.dumps` do?"
    signature  signature (of a described name)  "How is `json.dumps` called?"
    section    heading + passage            "What does <doc title> say about <heading>?"

The last rule serves other corpora (Markdown headings, short title lines before a paragraph).
Private and dunder names and members inherited from a base class (repeated on every subclass's
page) are skipped; identical questions are kept once; answers shorter than `min_answer_words`
are dropped and long ones trimmed to `max_answer_chars` at a sentence end.

Which pairs are kept (`max_pairs`) depends only on a salted hash of the question. Held out are
the pairs of the validation documents (`heldout_docs`: the chunk stage's split, so pretraining
never saw their answers, and decontamination cut their passages from the training blocks), or
without them the pairs whose salted question hash is small. Either way the split does not
depend on the order of the documents (but for a question two documents ask: the first is kept).
"""

from __future__ import annotations

import builtins
import hashlib
import heapq
import re
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lm_core.chunk.pack import split_is_val
from lm_core.schemas import CLEAN_DOC
from lm_core.shards import read_shard, shard_paths
from lm_core.tokenize.chat_template import Conversation, Message

# `json (version 2.0.9)`, `abc`
_PYDOC_TITLE = re.compile(r"^([A-Za-z_][\w.]*)(?:\s+\(version [^)]*\))?$")
# `name(args)`, `name(args) from builtins.type`, `name(args) method of random.Random instance`,
# `alias = name(args)`; a dotted name (`D.pop(k[,d]) -> v`) is description text, not a heading
_SIGNATURE = re.compile(
    r"^(?P<name>[A-Za-z_]\w*)(?: = (?P<alias>[A-Za-z_]\w*))?\((?P<args>.*)\)"
    r"(?: from [\w.]+| method of [\w.]+ instance)?$"
)
# what a parameter list starts with: nothing, `...`, `*`, `/`, or a name followed by , = : )
_ARGS_START = re.compile(r"^(?:$|\.\.\.|\*|/|\*{0,2}[A-Za-z_]\w*\s*(?:[,=:)]|$))")
_CLASS = re.compile(r"^class (?P<name>[A-Za-z_]\w*)(?:\((?P<bases>.*)\))?$")
_CLASS_ALIAS = re.compile(r"^(?P<alias>[A-Za-z_]\w*) = class (?P<name>[A-Za-z_]\w*)(?:\(.*\))?$")
_PYDOC_SECTIONS = frozenset({"Modules", "Classes", "Functions", "Data", "Package Contents", "Submodules"})
_PYDOC_SECTIONS |= frozenset({"Author", "Credits", "Version", "Date", "File"})
_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*$")
_UNDERLINE = re.compile(r"^([-=~^*])\1{2,}$")  # reStructuredText: the line above is a heading
_BUILTINS = frozenset(dir(builtins))
_SENTENCE_END = re.compile(r"[.!?](?=\s)")

KINDS = ("module", "class", "function", "signature", "section")


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    kind: str  # one of KINDS
    origin: str  # document id + the documented name or heading

    def conversation(self) -> Conversation:
        return Conversation((Message("user", self.question), Message("assistant", self.answer)), self.origin)


@dataclass
class QASplit:
    train: list[Conversation]
    heldout: list[Conversation]
    stats: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading a page


def _is_signature(line: str) -> re.Match | None:
    m = _SIGNATURE.match(line)
    if not m or not _ARGS_START.match(m["args"]):
        return None
    # `iterable = iter(o)` is code in an example; pydoc's aliases point at the module's own names
    return None if m["alias"] in _BUILTINS else m


def _is_marker(line: str) -> bool:
    """pydoc's member-list captions: "Methods defined here:", "... inherited from X:", ..."""
    return line.endswith(":") and (
        line.endswith("defined here:") or " inherited from " in line or line == "Method resolution order:"
    )


def _ends_passage(line: str) -> bool:
    stripped = line.strip()
    return (
        not stripped
        or stripped in _PYDOC_SECTIONS
        or _is_marker(stripped)
        or _CLASS.match(stripped) is not None
        or _is_signature(stripped) is not None
        or _MARKDOWN_HEADING.match(stripped) is not None
        or stripped.startswith(("|", "+-", ">>>", "```"))  # tables, doctests, code: not prose answers
    )


def _passage(lines: list[str], start: int) -> list[str]:
    """The prose lines from `start` up to the next blank line, heading or signature; a line
    that introduces a literal block (`Example::`) ends it too, left out."""
    out = []
    for line in lines[start:]:
        if _UNDERLINE.match(line.strip()):
            return out[:-1]  # the heading it underlines belongs to the next passage
        if _ends_passage(line) or line.rstrip().endswith("::"):
            break
        out.append(line.strip())
    if len(out) > 1 and out[-1].endswith(":"):
        out.pop()  # it introduces what the passage stopped before (a list, an example)
    return out


def _is_heading(lines: list[str], i: int) -> str | None:
    """A section heading's text: a Markdown heading, or a short capitalised line standing after
    a blank line, with no closing punctuation."""
    line = lines[i].strip()
    m = _MARKDOWN_HEADING.match(line)
    if m:
        return m["text"]
    if i > 0 and lines[i - 1].strip():
        return None
    words = line.split()
    if not 1 <= len(words) <= 8 or not line[0].isupper() or line[-1] in ".,;:!?)" or line in _PYDOC_SECTIONS:
        return None
    if _is_signature(line) or _CLASS.match(line) or line.startswith(("|", ">>>")):
        return None
    return line


def _next_text(lines: list[str], i: int) -> int:
    """The index of the first line from `i` on that is not blank (len(lines) if none)."""
    while i < len(lines) and not lines[i].strip():
        i += 1
    return i


def _pydoc_header(lines: list[str]) -> tuple[str, int] | None:
    """A pydoc page's (module name, index of the line after its title): the first line names a
    module (`json (version 2.0.9)`, `abc`), and pydoc's section captions follow."""
    top = _next_text(lines, 0)
    m = _PYDOC_TITLE.match(lines[top].strip()) if top < len(lines) else None
    if not m or not any(line in _PYDOC_SECTIONS for line in lines[top + 1 :]):
        return None
    return m[1], top + 1


def _title(doc_id: str, lines: list[str]) -> tuple[str, bool]:
    """(the document's title, whether it is a pydoc page)."""
    header = _pydoc_header(lines)
    if header:
        return header[0], True
    for line in lines[:5]:
        m = _MARKDOWN_HEADING.match(line.strip())
        if m:
            return m["text"], False
    return doc_id, False


def trim(text: str, max_chars: int) -> str:
    """`text` cut to at most `max_chars`, at the last sentence end if one falls in the second
    half of the budget, else at the last space."""
    if len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] >= max_chars // 2:
        return head[: ends[-1]].rstrip()
    space = head.rfind(" ", 0, max_chars)
    return (head[:space] if space > 0 else head[:max_chars]).rstrip()


class _Pairs:
    """Makes a pair from a question and passage, or None when the answer is too short."""

    def __init__(self, doc_id: str, max_answer_chars: int, min_answer_words: int):
        self.doc_id, self.max_chars, self.min_words = doc_id, max_answer_chars, min_answer_words

    def __call__(self, question: str, body: list[str], kind: str, anchor: str) -> QAPair | None:
        answer = trim("\n".join(body).strip(), self.max_chars)
        if len(answer.split()) < self.min_words:
            return None
        return QAPair(question, answer, kind, f"{self.doc_id}#{anchor}")


def _pydoc_pairs(title: str, lines: list[str], make: _Pairs) -> Iterator[QAPair | None]:
    first = _next_text(lines, _pydoc_header(lines)[1])
    yield make(f"What is the `{title}` module for?", _passage(lines, first), "module", title)
    in_sections = False  # before the first section, `name(...)` lines are examples in the docstring
    klass: str | None = None  # the class whose members are listed
    inherited = False  # inside a list of members inherited from a base class
    for i, raw in enumerate(lines):
        line = raw.strip()
        if line in _PYDOC_SECTIONS:
            in_sections = True
            if line in ("Functions", "Data"):
                klass, inherited = None, False
            continue
        if not in_sections:
            continue
        if _is_marker(line):
            inherited = not line.endswith("defined here:")
            continue
        alias = _CLASS_ALIAS.match(line)
        if alias:  # `SHA1Type = class sha1(...)`; `Text = class str(object)` repeats str's own docs
            klass, inherited = alias["alias"], alias["name"] in _BUILTINS
            continue
        m = _CLASS.match(line)
        if m:
            klass, inherited = m["name"], False
            start = _next_text(lines, i + 1)
            ctor = _is_signature(lines[start].strip()) if start < len(lines) else None
            if ctor and ctor["name"] == klass:  # the constructor's signature, then the description
                start = _next_text(lines, start + 1)
            if not klass.startswith("_"):
                yield make(f"What is `{title}.{klass}`?", _passage(lines, start), "class", f"{title}.{klass}")
            continue
        previous = lines[i - 1].strip() if i > 0 else ""
        if inherited or (previous.endswith(":") and not _is_marker(previous)):  # `for row in rows:`, then code
            continue
        sig = _is_signature(line)
        if not sig:
            continue
        name = sig["name"]
        if i + 1 < len(lines) and lines[i + 1].strip() == "Method resolution order:":
            klass = name  # a class whose `class` line the extractor dropped: its constructor stands for it
            continue
        if name.startswith("_") or name == klass:
            continue
        qualified = ".".join(p for p in (title, klass, name) if p)
        described = make(f"What does `{qualified}` do?", _passage(lines, i + 1), "function", qualified)
        yield described
        args = sig["args"]
        # only documented names; a memory address (`at 0x...`) in a default changes every run
        if described and args not in ("", "...", "self", "self, /", "/") and " at 0x" not in args:
            origin = f"{make.doc_id}#{qualified}"  # its document, as every other pair's
            yield QAPair(f"How is `{qualified}` called?", f"{qualified}({args})", "signature", origin)


def _section_pairs(title: str, lines: list[str], make: _Pairs) -> Iterator[QAPair | None]:
    for i, raw in enumerate(lines):
        heading = None if _SIGNATURE.match(raw.strip()) else _is_heading(lines, i)
        if heading:
            start = i + 2 if i + 1 < len(lines) and not lines[i + 1].strip() else i + 1  # Markdown: a blank line
            question = f"What is {title} about?" if heading == title else f"What does {title} say about {heading}?"
            yield make(question, _passage(lines, start), "section", heading)


def page_pairs(doc_id: str, text: str, max_answer_chars: int = 600, min_answer_words: int = 4) -> Iterator[QAPair]:
    """Every question/answer pair the rules find in one document, in page order."""
    lines = text.split("\n")
    title, pydoc = _title(doc_id, lines)
    make = _Pairs(doc_id, max_answer_chars, min_answer_words)
    found = _pydoc_pairs(title, lines, make) if pydoc else _section_pairs(title, lines, make)
    yield from (p for p in found if p is not None)


# ----------------------------------------------------------------------------- a whole corpus


def _hash(seed: int, purpose: str, question: str) -> int:
    digest = hashlib.blake2b(f"{seed}\0{purpose}\0{question}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _normalized(question: str) -> str:
    return " ".join(question.casefold().split())


def build_qa_pairs(
    texts: Iterable[tuple[str, str]],
    max_pairs: int | None = None,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    *,
    max_answer_chars: int = 600,
    min_answer_words: int = 4,
    heldout_docs: Container[str] | None = None,
) -> QASplit:
    """Question/answer chats from (document id, text) pairs, split into train and held-out.

    The document id names the pairs' origins and titles pages without one (pass a URL or a name
    rather than a hash). With `max_pairs`, the pairs kept are those whose salted question hash
    is smallest: a spread over all documents, held in memory `max_pairs` at a time, of which
    `heldout_fraction` (rounded) are held out. With `heldout_docs` (document ids), a pair is
    held out exactly when its document is one of them; else when its salted hash is small."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), is {heldout_fraction}")
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be positive, is {max_pairs}")
    seen: set[bytes] = set()  # digests of the questions met, to keep the first of identical ones
    kept: dict[bool, list[tuple[int, int, QAPair]]] = {False: [], True: []}  # max-heaps by selection hash
    held = round(max_pairs * heldout_fraction) if max_pairs is not None else 0
    cap = {True: held, False: max_pairs - held} if max_pairs is not None else None
    stats = {"documents": 0, "candidates": 0, "duplicates": 0}
    threshold = int(heldout_fraction * 2**64)
    for doc_id, text in texts:
        stats["documents"] += 1
        doc_held_out = heldout_docs is not None and doc_id in heldout_docs
        for qa in page_pairs(doc_id, text, max_answer_chars, min_answer_words):
            stats["candidates"] += 1
            key = hashlib.blake2b(_normalized(qa.question).encode(), digest_size=16).digest()
            if key in seen:
                stats["duplicates"] += 1
                continue
            seen.add(key)
            held_out = doc_held_out if heldout_docs is not None else _hash(seed, "heldout", qa.question) < threshold
            item, heap = (-_hash(seed, "pick", qa.question), stats["candidates"], qa), kept[held_out]
            if cap is None or len(heap) < cap[held_out]:
                heapq.heappush(heap, item)
            elif heap and item > heap[0]:
                heapq.heapreplace(heap, item)
    # by selection hash: a fixed shuffle
    train, heldout = ([qa.conversation() for *_, qa in sorted(kept[h], reverse=True)] for h in (False, True))
    chosen = [qa for h in (False, True) for *_, qa in kept[h]]
    stats |= {"pairs": len(chosen), "train": len(train), "heldout": len(heldout)}
    for kind in KINDS:
        stats[f"kind_{kind}"] = sum(qa.kind == kind for qa in chosen)
    return QASplit(train, heldout, stats)


def clean_documents(docs_dir: str | Path) -> Iterator[tuple[str, str]]:
    """(url, text) of every document of a clean artifact's `docs` folder, shard by shard."""
    for path in shard_paths(docs_dir):
        for batch in read_shard(path, CLEAN_DOC).select(["url", "text"]).to_batches():
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)


def validation_urls(docs_dir: str | Path, split_salt: str, val_fraction: float) -> set[str]:
    """The urls of the clean documents that the chunk stage holds out for validation (the same
    rule on the same ids, `split_is_val`)."""
    urls: set[str] = set()
    for path in shard_paths(docs_dir):
        table = read_shard(path).select(["id", "url"])
        held_out = split_is_val(table.column("id").to_pylist(), split_salt, val_fraction)
        urls.update(u for u, v in zip(table.column("url").to_pylist(), held_out, strict=True) if v)
    return urls
