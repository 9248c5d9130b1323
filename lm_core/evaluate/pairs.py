"""Prompt/reference pairs: what a model's generations are scored against (BLEU, chrF).

A pair set comes from a JSONL file, one `{"prompt": str, "reference": str}` object per line
(other fields are ignored, blank lines skipped), or is built from held-out documents: the
validation documents of the chunk artifact, which the model never trained on. A held-out pair's
prompt is the first `prompt_tokens` tokens of a document and its reference the next
`reference_tokens`, both decoded back to text with the model's tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from lm_core.chunk.pack import split_is_val
from lm_core.evaluate.errors import EvalSetError, PairFileError
from lm_core.shards import read_shard, shard_paths
from lm_core.workspace import ArtifactError, read_manifest

if TYPE_CHECKING:  # torch is imported only where a model is used
    from lm_core.textgen import TextModel

HELDOUT = "heldout"  # the name of the pair set built from held-out documents


@dataclass(frozen=True)
class Pair:
    prompt: str
    reference: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# ----------------------------------------------------------------------------- JSONL files


def read_pairs(path: str | Path) -> list[Pair]:
    """Every pair of a JSONL file; raises `PairFileError` at the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise PairFileError(f"pair file {path} does not exist")
    pairs = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PairFileError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            pairs.append(_pair(line, where))
    if not pairs:
        raise PairFileError(f"pair file {path} holds no pairs: expected one {{prompt, reference}} object per line")
    return pairs


def _pair(line: str, where: str) -> Pair:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise PairFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise PairFileError(f"{where}: expected a JSON object with prompt and reference, got {type(record).__name__}")
    for field in ("prompt", "reference"):
        if field not in record:
            raise PairFileError(f"{where}: missing field {field!r}")
        if not isinstance(record[field], str):
            raise PairFileError(f"{where}: field {field!r} must be a string, is {type(record[field]).__name__}")
    return Pair(record["prompt"], record["reference"])


def write_pairs(path: str | Path, pairs: list[Pair]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- held-out documents


def clean_docs_dir(chunk_dir: str | Path) -> Path:
    """The clean documents a chunk artifact was made from, found through its manifests
    (chunk -> tokenize -> clean) in the same workspace."""
    chunk_dir = Path(chunk_dir)
    root = chunk_dir.parent.parent
    try:
        tokenize_fp = read_manifest(chunk_dir)["inputs"]["tokenize"]
        clean_fp = read_manifest(root / "tokenize" / tokenize_fp)["inputs"]["clean"]
        read_manifest(root / "clean" / clean_fp)
    except (ArtifactError, KeyError) as e:
        raise EvalSetError(
            f"held-out pairs need the clean documents behind {chunk_dir}, which cannot be found ({e}); "
            "set evaluate.heldout_pairs=0 to evaluate without them"
        ) from None
    return root / "clean" / clean_fp / "docs"


def validation_documents(chunk_dir: str | Path) -> Iterator[tuple[str, str]]:
    """(id, text) of the clean documents that the chunk artifact held out for validation, in the
    order of their ids (hashes of the text: a fixed order that favours no source or shard)."""
    chunk_dir = Path(chunk_dir)
    split = read_manifest(chunk_dir)["config"]
    tables: list[pa.Table] = []
    held_out: list[tuple[str, int, int]] = []  # (id, table, row)
    for path in shard_paths(clean_docs_dir(chunk_dir)):
        table = read_shard(path).select(["id", "text"])
        ids = table.column("id").to_pylist()
        for row in split_is_val(ids, split["split_salt"], split["val_fraction"]).nonzero()[0]:
            held_out.append((ids[row], len(tables), int(row)))
        tables.append(table)
    for doc_id, t, row in sorted(held_out):
        yield doc_id, tables[t].column("text")[row].as_py()


def heldout_pairs(
    model: TextModel, chunk_dir: str | Path, count: int, prompt_tokens: int, reference_tokens: int
) -> list[Pair]:
    """One pair from the start of each of the first `count` validation documents (by id) that
    hold at least `prompt_tokens + reference_tokens` tokens; shorter ones are skipped."""
    need = prompt_tokens + reference_tokens
    pairs: list[Pair] = []
    for _, text in validation_documents(chunk_dir):
        if len(pairs) == count:
            break
        ids = model.encode(text)
        if len(ids) >= need:
            pairs.append(Pair(model.decode(ids[:prompt_tokens]), model.decode(ids[prompt_tokens:need])))
    if not pairs:
        raise EvalSetError(
            f"no validation document behind {chunk_dir} holds prompt_tokens + reference_tokens = {need} tokens: "
            "lower evaluate.prompt_tokens or evaluate.reference_tokens, or set evaluate.heldout_pairs=0"
        )
    return pairs
