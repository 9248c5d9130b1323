"""Arrow IPC shards: the on-disk form of every data artifact.

Shards use Arrow's IPC *stream* format in `.arrow` files: memory-mappable with `pyarrow`, and
the same layout Hugging Face `datasets` uses, so `datasets.Dataset.from_file(path)` opens them
as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

SUFFIX = ".arrow"


class CorruptShardError(RuntimeError):
    """A shard that cannot be read back as Arrow, or does not have the schema it should."""


def shard_name(index: int, prefix: str = "part") -> str:
    return f"{prefix}-{index:05d}{SUFFIX}"


def shard_paths(folder: str | Path, prefix: str = "part") -> list[Path]:
    """A folder's numbered shards in order (part-00000, part-00001, ...); other files (such as
    the chunk stage's tail.arrow) are not shards of the sequence."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == SUFFIX and p.name.startswith(f"{prefix}-"))


def write_shard(path: str | Path, table: pa.Table) -> int:
    """Write one shard; returns its size in bytes. Callers write inside a stage's partial folder,
    which is published atomically as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=64 * 1024)
    return path.stat().st_size


def read_shard(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """Memory-map a shard (no copy of its buffers); raise `CorruptShardError` naming the file if it
    is unreadable or lacks a field of `schema`."""
    path = Path(path)
    try:
        with pa.memory_map(str(path), "r") as source:
            table = pa.ipc.open_stream(source).read_all()
    except FileNotFoundError:
        raise CorruptShardError(f"shard {path} is missing") from None
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise CorruptShardError(f"shard {path} is corrupt or not an Arrow IPC stream: {e}") from None
    if schema is not None:
        for field in schema:
            got = table.schema.field(field.name) if field.name in table.schema.names else None
            if got is None or not got.type.equals(field.type):
                have = got.type if got is not None else "missing"
                raise CorruptShardError(f"shard {path}: column {field.name!r} should be {field.type}, is {have}")
    return table


def iter_batches(path: str | Path, schema: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
    yield from read_shard(path, schema).to_batches()


class ShardWriter:
    """Collects rows and writes them as numbered shards of at most `rows_per_shard` rows."""

    def __init__(
        self, folder: str | Path, schema: pa.Schema, rows_per_shard: int, prefix: str = "part", first_index: int = 0
    ):
        self.folder = Path(folder)
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.index = first_index
        self.rows_written = 0
        self.paths: list[Path] = []
        self._pending: list[dict] = []

    def add(self, row: dict) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.rows_per_shard:
            self.flush()

    def flush(self) -> Path | None:
        """Write what is pending as the next shard (nothing if nothing is pending)."""
        if not self._pending:
            return None
        table = pa.Table.from_pylist(self._pending, schema=self.schema)
        path = self.folder / shard_name(self.index, self.prefix)
        write_shard(path, table)
        self.paths.append(path)
        self.rows_written += len(self._pending)
        self.index += 1
        self._pending = []
        return path

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> list[Path]:
        self.flush()
        return self.paths
