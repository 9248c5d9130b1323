"""Reading and writing fine-tuning data: chat examples and preference pairs.

Chat examples, one JSON object per line of a JSONL file or per row of a `datasets` source:

    {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}
    {"prompt": str, "response": str}               -> a user turn and an assistant turn

Preference pairs (DPO), where `prompt` may also be a list of messages ending with a user turn,
and `chosen`/`rejected` may also be a one-message list `[{"role": "assistant", "content": str}]`
(the conversational form TRL uses):

    {"prompt": str, "chosen": str, "rejected": str}

Other fields are ignored and blank lines skipped. Every problem stops the read with a
`ChatDataError` naming the file and line (or the dataset row) and what is wrong: it is better to
fix a training set than to train on a silently shortened one. Writers are atomic: a temporary
file in the same folder, renamed into place when complete.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lm_core.bom import sniff_bom
from lm_core.tokenize.chat_template import ChatDataError, Conversation, Message, conversation_problem


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt (the history, ending with a user turn) and two replies, the better one first."""

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    origin: str = ""

    def to_dict(self) -> dict[str, Any]:
        single_user = len(self.prompt) == 1 and self.prompt[0].role == "user"
        prompt = self.prompt[0].content if single_user else [m.to_dict() for m in self.prompt]
        return {"prompt": prompt, "chosen": self.chosen, "rejected": self.rejected}


@dataclass(frozen=True)
class DatasetSource:
    """Anything `datasets.load_dataset` reads: a hub name, or a builder such as `json` with local
    `data_files`. The same fields as the crawl's `hf_dataset` source, without its text column."""

    path: str
    name: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    split: str = "train"
    streaming: bool = True
    max_examples: int | None = None

    @classmethod
    def of(cls, spec: DatasetSource | Mapping[str, Any]) -> DatasetSource:
        if isinstance(spec, DatasetSource):
            return spec
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ChatDataError(f"dataset source: unknown field(s) {', '.join(unknown)} (known: {', '.join(known)})")
        if not isinstance(spec.get("path"), str) or not spec["path"]:
            raise ChatDataError("dataset source: `path` must be a non-empty string (a hub name or a builder)")
        source = cls(**spec)
        if source.max_examples is not None and (not isinstance(source.max_examples, int) or source.max_examples < 1):
            raise ChatDataError(f"dataset source {source.path!r}: max_examples must be a positive integer")
        return source


# ----------------------------------------------------------------------------- records -> examples


def _field(record: Mapping[str, Any], key: str) -> Any:
    """A field's value; None when absent (`datasets` fills a column a row lacks with None)."""
    return record.get(key)


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise ChatDataError(f"{where}: {what} must be a string, is {_type(value)}")
    if not value.strip():
        raise ChatDataError(f"{where}: {what} is empty")
    return value


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def parse_messages(value: Any, where: str) -> tuple[Message, ...]:
    """A JSON `messages` value as Messages; ChatDataError names `where` and what is wrong."""
    if not isinstance(value, list):
        raise ChatDataError(f"{where}: `messages` must be a list of {{role, content}} objects, is {_type(value)}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise ChatDataError(f"{where}: messages[{i}] must be an object with role and content, is {_type(m)}")
        role, content = _field(m, "role"), _field(m, "content")
        if not isinstance(role, str):
            raise ChatDataError(f"{where}: messages[{i}].role must be a string, is {_type(role)}")
        if not isinstance(content, str):
            raise ChatDataError(f"{where}: messages[{i}].content must be a string, is {_type(content)}")
        out.append(Message(role, content))
    return tuple(out)


def _checked(messages: tuple[Message, ...], where: str, *, for_training: bool) -> tuple[Message, ...]:
    problem = conversation_problem(messages, for_training=for_training)
    if problem:
        raise ChatDataError(f"{where}: {problem}")
    return messages


def chat_example(record: Any, where: str) -> Conversation:
    """One chat example from a parsed JSON object or dataset row; `where` names it in errors."""
    if not isinstance(record, Mapping):
        raise ChatDataError(f"{where}: expected a JSON object, got {_type(record)}")
    messages, prompt, response = _field(record, "messages"), _field(record, "prompt"), _field(record, "response")
    if messages is not None and (prompt is not None or response is not None):
        raise ChatDataError(f"{where}: has both `messages` and `prompt`/`response`: use one shape")
    if messages is not None:
        return Conversation(_checked(parse_messages(messages, where), where, for_training=True), where)
    if prompt is not None or response is not None:
        user = _text(prompt, "`prompt`", where)
        assistant = _text(response, "`response`", where)
        return Conversation(
            _checked((Message("user", user), Message("assistant", assistant)), where, for_training=True), where
        )
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise ChatDataError(
        f"{where}: not a chat example: expected `messages` (a list of role/content objects) or "
        f"`prompt` and `response` (fields present: {keys})"
    )


def _reply(value: Any, what: str, where: str) -> str:
    if isinstance(value, list):  # [{"role": "assistant", "content": ...}]
        turns = parse_messages(value, where)
        if len(turns) != 1 or turns[0].role != "assistant":
            raise ChatDataError(f"{where}: {what} as a list must hold exactly one assistant message")
        value = turns[0].content
    return _text(value, what, where)


def preference_example(record: Any, where: str) -> PreferenceExample:
    """One preference pair from a parsed JSON object or dataset row."""
    if not isinstance(record, Mapping):
        raise ChatDataError(f"{where}: expected a JSON object, got {_type(record)}")
    missing = [k for k in ("prompt", "chosen", "rejected") if _field(record, k) is None]
    if missing:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise ChatDataError(
            f"{where}: missing {', '.join(missing)} (a preference pair needs prompt, chosen, rejected; present: {keys})"
        )
    prompt = _field(record, "prompt")
    if isinstance(prompt, list):
        turns = _checked(parse_messages(prompt, where), where, for_training=False)
        if turns[-1].role != "user":
            raise ChatDataError(f"{where}: the prompt's last message is from {turns[-1].role}, not user")
    else:
        turns = (Message("user", _text(prompt, "`prompt`", where)),)
    chosen = _reply(_field(record, "chosen"), "`chosen`", where)
    rejected = _reply(_field(record, "rejected"), "`rejected`", where)
    if chosen == rejected:
        raise ChatDataError(f"{where}: `chosen` and `rejected` are the same text: the pair says nothing")
    return PreferenceExample(turns, chosen, rejected, where)


# ----------------------------------------------------------------------------- JSONL files


def jsonl_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(`file:line`, parsed JSON value) for every non-blank line; raises `ChatDataError` for a
    missing file, a line that is not UTF-8 or not JSON, and a file with no records at all."""
    path = Path(path)
    if not path.is_file():
        raise ChatDataError(f"{path}: no such file")
    n = 0
    with open(path, "rb") as f:  # bytes: a bad byte is reported with its line, not as a crash
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if lineno == 1:
                bom = sniff_bom(raw)
                if bom is not None and bom[1] != "utf-8":
                    raise ChatDataError(f"{where}: the file is {bom[1]} (byte-order mark); save it as UTF-8")
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ChatDataError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ChatDataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise ChatDataError(f"{where}: JSON nested too deeply") from None
            n += 1
            yield where, record
    if n == 0:
        raise ChatDataError(f"{path}: the file holds no examples (expected one JSON object per line)")


def iter_chat_jsonl(path: str | Path) -> Iterator[Conversation]:
    for where, record in jsonl_records(path):
        yield chat_example(record, where)


def read_chat_jsonl(path: str | Path) -> list[Conversation]:
    return list(iter_chat_jsonl(path))


def iter_preferences_jsonl(path: str | Path) -> Iterator[PreferenceExample]:
    for where, record in jsonl_records(path):
        yield preference_example(record, where)


def read_preferences_jsonl(path: str | Path) -> list[PreferenceExample]:
    return list(iter_preferences_jsonl(path))


# ----------------------------------------------------------------------------- datasets sources


def dataset_records(spec: DatasetSource | Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(`hf://path[/name]/split[@files]/row`, row) for every row of a `datasets` source, read as
    the crawl reads its `hf_dataset` sources; a source that will not load is a `ChatDataError`."""
    import datasets  # heavy: imported only when a dataset is read

    from lm_core.crawl.sources import hf_id_prefix  # the crawl's row names, so both read alike

    src = DatasetSource.of(spec)
    prefix = hf_id_prefix(src)  # type: ignore[arg-type]  # reads path, name, split, data_files only
    try:
        ds = datasets.load_dataset(
            src.path, src.name, data_files=src.data_files, split=src.split, streaming=src.streaming
        )
    except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "this source cannot be read"
        raise ChatDataError(f"{prefix}: cannot load dataset {src.path!r}: {type(e).__name__}: {e}") from e
    rows = iter(ds)
    index = 0
    while src.max_examples is None or index < src.max_examples:
        try:
            row = next(rows)
        except StopIteration:
            break
        except Exception as e:  # noqa: BLE001 - a corrupt file met while streaming
            raise ChatDataError(f"{prefix}: failed after {index} rows: {type(e).__name__}: {e}") from e
        yield f"{prefix}/{index}", row
        index += 1
    if index == 0:
        raise ChatDataError(f"{prefix}: the dataset holds no rows")


def dataset_local_files(spec: DatasetSource | Mapping[str, Any]) -> list[str]:
    """The local files a source reads (to fingerprint them: edited files, a new artifact);
    empty for a hub dataset."""
    from lm_core.crawl.sources import _local_data_files  # the crawl's reading of a source, so both agree

    return _local_data_files(DatasetSource.of(spec))  # type: ignore[arg-type]


def iter_chat_dataset(spec: DatasetSource | Mapping[str, Any]) -> Iterator[Conversation]:
    for where, row in dataset_records(spec):
        yield chat_example(row, where)


def read_chat_dataset(spec: DatasetSource | Mapping[str, Any]) -> list[Conversation]:
    return list(iter_chat_dataset(spec))


def iter_preference_dataset(spec: DatasetSource | Mapping[str, Any]) -> Iterator[PreferenceExample]:
    for where, row in dataset_records(spec):
        yield preference_example(row, where)


def read_preference_dataset(spec: DatasetSource | Mapping[str, Any]) -> list[PreferenceExample]:
    return list(iter_preference_dataset(spec))


# ----------------------------------------------------------------------------- writers


def _write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSONL atomically: the file is either the old one or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_chat_jsonl(path: str | Path, conversations: Iterable[Conversation]) -> int:
    """Write chats as `{"messages": [...]}` lines; returns how many. A chat that could not be
    trained on (see `conversation_problem`) is refused before the file is replaced."""

    def records() -> Iterator[dict[str, Any]]:
        for i, conv in enumerate(conversations):
            _checked(conv.messages, conv.origin or f"conversation {i}", for_training=True)
            yield conv.to_dict()

    return _write_jsonl(path, records())


def write_preferences_jsonl(path: str | Path, examples: Iterable[PreferenceExample]) -> int:
    def records() -> Iterator[dict[str, Any]]:
        for i, ex in enumerate(examples):
            # the same checks as reading: what is written here can be read back
            yield preference_example(ex.to_dict(), ex.origin or f"preference pair {i}").to_dict()

    return _write_jsonl(path, records())
