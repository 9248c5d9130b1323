"""What a model is evaluated on, as named sets: the pair sets (held-out pairs and JSONL files)
and the extra text sets (local files and `datasets` sources) of an `EvaluateConfig`.

A set's name is what its metrics are called by (`bleu.<name>`, `text.<name>.bpb`): a pair file's
stem, a text folder's or file's stem, a dataset's data file stem or path. Names are made unique
with a numeric suffix, and `heldout` is the held-out pairs' own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lm_core.config import CrawlConfig, EvaluateConfig, FilesSource, HFDatasetSource
from lm_core.crawl import rows
from lm_core.crawl.sources import CrawlInputError, _local_data_files, file_rows, hf_rows, match_files
from lm_core.evaluate.errors import EvalSetError, PairFileError
from lm_core.evaluate.pairs import HELDOUT, Pair, heldout_pairs, read_pairs
from lm_core.finetune.artifact import heldout_chats_file
from lm_core.workspace import content_digest

if TYPE_CHECKING:  # torch is imported only where a model is used: fingerprints need none
    from lm_core.textgen import TextModel

TEXT_TYPES = ["text/plain", "text/markdown"]  # and .jsonl, which the files reader always takes
_NO_SIZE_LIMIT = 1 << 50
PAIRS_DIR = "pairs"
CHAT = "chat"  # the pair set of a fine-tuned chat model's held-out chats


# ----------------------------------------------------------------------------- names


def _clean_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "set"


def _unique(names: list[str], taken: set[str]) -> list[str]:
    out = []
    for name in names:
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}-{n}", n + 1
        taken.add(candidate)
        out.append(candidate)
    return out


def pair_set_paths(cfg: EvaluateConfig) -> dict[str, Path]:
    """The configured pair files by set name (`heldout` is reserved for the held-out pairs)."""
    paths = [Path(p).expanduser() for p in cfg.pair_sets]
    names = _unique([_clean_name(p.stem) for p in paths], {HELDOUT, CHAT})
    return dict(zip(names, paths, strict=True))


def text_sources(cfg: EvaluateConfig) -> dict[str, tuple[str, FilesSource | HFDatasetSource]]:
    """The configured text sources by set name, each with where it is configured (for errors)."""
    found: list[tuple[str, str, FilesSource | HFDatasetSource]] = []
    for i, src in enumerate(cfg.texts):
        found.append((_clean_name(Path(src.path).stem), f"evaluate.texts[{i}]", src))
    for i, src in enumerate(cfg.hf_texts):
        base = Path(src.data_files).stem if isinstance(src.data_files, str) else (src.name or Path(src.path).name)
        found.append((_clean_name(base), f"evaluate.hf_texts[{i}]", src))
    names = _unique([name for name, _, _ in found], set())
    return {name: (where, src) for name, (_, where, src) in zip(names, found, strict=True)}


# ----------------------------------------------------------------------------- fingerprint inputs


def _content_digest(paths: list[Path], root: Path | None = None) -> str:
    """Edited data, a new evaluation; the same data elsewhere or touched, the same one. (A broken
    link, say, is digested as unreadable: reading the set reports it, naming the file.)"""
    return f"{len(paths)} files, {content_digest(paths, root, unreadable_ok=True)}"


def source_digests(cfg: EvaluateConfig) -> dict[str, str]:
    """Fingerprint inputs for the local files the evaluation reads (a hub dataset is identified
    by its config alone). Raises `PairFileError`/`EvalSetError` naming a missing file."""
    out: dict[str, str] = {}
    for name, path in pair_set_paths(cfg).items():
        if not path.is_file():
            raise PairFileError(f"pair file {path} (evaluate.pair_sets, set {name!r}) does not exist")
        out[f"pairs.{name}"] = _content_digest([path])
    for name, (where, src) in text_sources(cfg).items():
        if isinstance(src, FilesSource):
            try:
                files = match_files(src)
            except CrawlInputError as e:
                raise EvalSetError(f"{where}: {e}") from None
            out[f"text.{name}"] = _content_digest(files, Path(src.path).expanduser())
        elif local := _local_data_files(src):
            out[f"text.{name}"] = _content_digest([Path(p) for p in local])
    return out


# ----------------------------------------------------------------------------- reading


def read_texts(src: FilesSource | HFDatasetSource, where: str) -> Iterator[str]:
    """The documents of a text source, with the crawl's own readers: txt, md and jsonl files
    (any text encoding), or a `datasets` text column. A file of another type, a malformed
    jsonl line, undecodable bytes or a row without text is an `EvalSetError`."""
    if isinstance(src, FilesSource):
        crawl_cfg = CrawlConfig(files=[src], content_types=TEXT_TYPES, max_bytes=_NO_SIZE_LIMIT)
        found = file_rows(src, crawl_cfg)
    else:
        found = hf_rows(src, where, _NO_SIZE_LIMIT)
    try:
        for row in found:
            yield _text_of(row, where)
    except CrawlInputError as e:
        raise EvalSetError(str(e)) from None


def _text_of(row: rows.Doc | rows.Failure, where: str) -> str:
    r = row.row
    if isinstance(row, rows.Failure):
        raise EvalSetError(f"{where}: {r['url']}: {r['reason']} ({r['detail']}); evaluate.texts reads txt, md, jsonl")
    from lm_core.clean.decode import decode_body  # the clean stage's decoder; slow to import

    decoded = decode_body(r["body"], r["declared_encoding"], r["detected_encoding"])
    if decoded.replaced:
        raise EvalSetError(f"{where}: {r['url']} holds bytes that are not text in any encoding tried")
    return decoded.text


def read_text_sets(cfg: EvaluateConfig) -> dict[str, list[str]]:
    sets = {}
    for name, (where, src) in text_sources(cfg).items():
        docs = list(read_texts(src, where))
        if not docs:
            raise EvalSetError(f"{where} (text set {name!r}) holds no document")
        sets[name] = docs
    return sets


def chat_pairs(model_dir: str | Path) -> list[Pair]:
    """A chat model's held-out single-turn chats as pairs: the user's message is the prompt (the
    model renders it with its chat template) and the assistant's reply the reference."""
    from lm_core.finetune.data import read_chat_jsonl  # only for a chat model's held-out chats

    path = heldout_chats_file(model_dir)
    if path is None:
        return []
    pairs = []
    for conv in read_chat_jsonl(path):
        turns = [m for m in conv.messages if m.role != "system"]
        if len(turns) == 2 and turns[0].role == "user" and turns[1].role == "assistant":
            pairs.append(Pair(turns[0].content, turns[1].content))
    return pairs


def build_pair_sets(
    cfg: EvaluateConfig, model: TextModel, chunk_dir: str | Path, model_dir: str | Path | None = None
) -> dict[str, list[Pair]]:
    """The held-out pairs (if `heldout_pairs` > 0; for a chat model also its held-out chats),
    then every configured pair file."""
    sets: dict[str, list[Pair]] = {}
    if cfg.heldout_pairs:
        sets[HELDOUT] = heldout_pairs(model, chunk_dir, cfg.heldout_pairs, cfg.prompt_tokens, cfg.reference_tokens)
    if model_dir is not None and model.is_chat and (chats := chat_pairs(model_dir)):
        sets[CHAT] = chats
    for name, path in pair_set_paths(cfg).items():
        sets[name] = read_pairs(path)
    return sets


def published_pair_sets(evaluate_dir: str | Path) -> dict[str, list[Pair]]:
    """The pair sets an evaluate artifact used, by name: to score another model on the very same
    pairs (a champion against its challenger)."""
    return {p.stem: read_pairs(p) for p in sorted((Path(evaluate_dir) / PAIRS_DIR).glob("*.jsonl"))}
