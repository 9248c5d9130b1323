"""Content-addressed, atomically published artifacts.

A workspace holds `<stage>/<fingerprint>/`. The fingerprint hashes the stage name, the values
of its config that decide its output, the fingerprints of its inputs and the stage's code
version: same inputs, same folder, and the stage is skipped. A stage builds in a sibling
`.partial-<fingerprint>` folder under an exclusive file lock and renames it into place with its
`_manifest.json` only when complete, so no reader ever sees a half-written artifact and two
processes never build the same artifact at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MANIFEST = "_manifest.json"
_FINGERPRINT = re.compile(r"[0-9a-f]{16}")  # what `fingerprint` returns
_LOCK_PREFIX = ".lock-"  # <stage>/.lock-<fingerprint>: held while the artifact is built or removed
_REPORTED_LIBRARIES = ("lmforge", "pyarrow", "tokenizers", "trafilatura", "datasketch", "torch", "prefect")


class ArtifactError(RuntimeError):
    """An artifact that is missing, unreadable or not what it claims to be."""


class DiskFullError(OSError, ArtifactError):
    """Writing into a folder failed for want of space (a full disk, a quota, a file-size limit).
    An OSError (its errno says which) and an ArtifactError (the CLI shows it as one `error:` line);
    the message names the folder, the space needed where known, and the space free."""

    def __init__(self, code: int, message: str):
        super().__init__(code, message)  # (errno, message): what OSError pickles and rebuilds

    def __str__(self) -> str:
        return self.args[1]


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_RUST_OS_ERROR = re.compile(r"os error (\d+)")  # how safetensors' I/O errors name their errno


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _free(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFullError before writing `needed` bytes of `what` into `folder` if they cannot fit,
    so that a full disk stops a write before it leaves anything half-written."""
    free = _free(folder)
    if needed > free:
        raise DiskFullError(
            errno.ENOSPC, f"no space left to write {what} in {folder}: needs {_size(needed)}, {_size(free)} free"
        )


def out_of_space(error: BaseException, folder: Path, what: str, needed: int | None = None) -> DiskFullError | None:
    """The DiskFullError that `error`, raised while writing `what` into `folder`, stands for (a
    full disk, a quota, a file-size limit, or a failed write of more than the space free); None
    when it is some other failure. Call it once the failed write's partial files are removed."""
    if isinstance(error, DiskFullError):
        return error
    if not isinstance(error, Exception):
        return None
    code = error.errno if isinstance(error, OSError) else None
    if code is None and (m := _RUST_OS_ERROR.search(str(error))):
        code = int(m.group(1))
    free = _free(folder)
    if code not in _NO_SPACE and not (needed and needed > free):
        return None  # torch.save's failed write names no errno: a write larger than the space free is one
    need = f"needs {_size(needed)}, " if needed else ""
    if code == errno.EFBIG:
        limit = "a file passed the file-size limit (ulimit -f)"
        return DiskFullError(code, f"cannot write {what} in {folder}: {limit}; {need}{_size(free)} free on its disk")
    return DiskFullError(code or errno.ENOSPC, f"no space left to write {what} in {folder}: {need}{_size(free)} free")


class ArtifactRef(BaseModel):
    """What stages pass to each other: where an artifact lies and what it holds, never its data."""

    stage: str
    fingerprint: str
    path: str
    stats: dict[str, Any] = {}

    @property
    def dir(self) -> Path:
        return Path(self.path)

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.dir)


class StageKey(BaseModel):
    """A stage run decided before any work: the artifact's fingerprint, and the config and inputs
    its manifest records. Computed once per run (`lm_core.stages.stage_key`) and handed to the
    build, which need not hash anything again."""

    stage: str
    fingerprint: str
    config: dict[str, Any]
    inputs: dict[str, str]


def fingerprint(stage: str, config: dict[str, Any], inputs: dict[str, str], code_version: int) -> str:
    """Hash of everything that decides a stage's output."""
    payload = json.dumps(
        {"stage": stage, "config": config, "inputs": inputs, "code_version": code_version},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_manifest(artifact_dir: Path) -> dict[str, Any]:
    path = Path(artifact_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{artifact_dir} is not a published artifact (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is corrupt: {e}") from None


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _REPORTED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def content_digest(paths: list[str] | list[Path], root: Path | None = None, unreadable_ok: bool = False) -> str:
    """A digest of files' names (below `root`, a folder; else base names) and contents, for a
    fingerprint's inputs: edited data makes a new artifact; the same data moved or touched does
    not. An unreadable file raises OSError, or with `unreadable_ok` counts as "unreadable"."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        name = p.relative_to(root) if root is not None and root.is_dir() else p.name
        h.update(f"{name}\0".encode())
        try:
            with open(p, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
        except OSError:
            if not unreadable_ok:
                raise
            h.update(b"unreadable")
    return h.hexdigest()[:16]


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never a torn one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if (full := out_of_space(e, path.parent, path.name)) is not None:
            raise full from e
        raise


class StageBuild:
    """A stage's output while it is being built; see `Workspace.build`."""

    def __init__(self, ws: Workspace, stage: str, fp: str, config: dict, inputs: dict[str, str]):
        self.workspace, self.stage, self.fingerprint = ws, stage, fp
        self.config, self.inputs = config, inputs
        self.final_dir = ws.artifact_dir(stage, fp)
        self.dir = ws.partial_dir(stage, fp)
        self.stats: dict[str, Any] = {}
        self.started = time.time()
        self.ref: ArtifactRef | None = None

    @property
    def published(self) -> bool:
        return self.ref is not None

    def publish(self) -> ArtifactRef:
        files = {}
        rows_total = bytes_total = 0
        for p in sorted(self.dir.rglob("*")):
            if p.is_file():
                size = p.stat().st_size
                files[str(p.relative_to(self.dir))] = size
                bytes_total += size
        manifest = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "inputs": self.inputs,
            "created": datetime.now(UTC).isoformat(timespec="microseconds"),  # orders same-second builds
            "seconds": round(time.time() - self.started, 3),
            "bytes": bytes_total,
            "files": files,
            "stats": self.stats,
            "versions": library_versions(),
        }
        if self.workspace.origin:
            manifest["origin"] = self.workspace.origin
        rows_total = self.stats.get("rows")
        if rows_total is not None:
            manifest["rows"] = rows_total
        write_json_atomic(self.dir / MANIFEST, manifest)
        _fsync_dir(self.dir)
        replaced = None
        if self.final_dir.exists():  # a forced rebuild: move the old artifact aside first
            replaced = self.final_dir.parent / f".replaced-{self.fingerprint}-{os.getpid()}"
            os.rename(self.final_dir, replaced)
        os.rename(self.dir, self.final_dir)  # atomic: the artifact appears whole or not at all
        _fsync_dir(self.final_dir.parent)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        self.ref = self.workspace.ref(self.stage, self.fingerprint)
        return self.ref


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Workspace:
    """A folder of artifacts. `rebuild` names stages to recompute even where their artifact is
    published already (`--force`); the new artifact then replaces the old one. `origin` says who
    builds (the orchestrator's run: id, name, flow), recorded in each manifest published here."""

    def __init__(
        self, root: str | Path, rebuild: tuple[str, ...] | list[str] = (), origin: dict[str, str] | None = None
    ):
        self.root = Path(root).resolve()
        self.rebuild = frozenset(rebuild)
        self.origin = dict(origin or {})

    def artifact_dir(self, stage: str, fp: str) -> Path:
        return self.root / stage / fp

    def lock_path(self, stage: str, fp: str) -> Path:
        """The file whose lock a build or a removal of `<stage>/<fp>` holds."""
        return self.root / stage / f"{_LOCK_PREFIX}{fp}"

    def partial_dir(self, stage: str, fp: str) -> Path:
        """Where `<stage>/<fp>` is built before it is published (see `build`)."""
        return self.root / stage / f".partial-{fp}"

    def is_published(self, stage: str, fp: str) -> bool:
        return (self.artifact_dir(stage, fp) / MANIFEST).is_file()

    def ref(self, stage: str, fp: str) -> ArtifactRef:
        d = self.artifact_dir(stage, fp)
        m = read_manifest(d)
        return ArtifactRef(stage=stage, fingerprint=fp, path=str(d), stats=m.get("stats", {}))

    @contextmanager
    def build(
        self, stage: str, fp: str, *, config: dict, inputs: dict[str, str], resume: bool = False
    ) -> Iterator[StageBuild]:
        """Build `<stage>/<fp>` unless it is published already.

        Yields a `StageBuild`: if `.published` is true the artifact exists (`.ref`) and there is
        nothing to do; otherwise write into `.dir`, fill `.stats`, and leave the block: the
        folder is published atomically. An exception leaves nothing published; the partial
        folder is kept only when `resume` is true (a crawl resumes from it). Running out of
        space ends in a DiskFullError naming the folder; a published artifact stays untouched.
        """
        (self.root / stage).mkdir(parents=True, exist_ok=True)
        # The lock file stays after the build: removing it would let a newcomer lock a fresh file
        # while a waiter still holds the old one, and both would build.
        with open(self.lock_path(stage, fp), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder of the same artifact waits here
            b = StageBuild(self, stage, fp, config, inputs)
            if self.is_published(stage, fp) and stage not in self.rebuild:
                b.ref = self.ref(stage, fp)
                yield b
                return
            if b.dir.exists() and not resume:
                shutil.rmtree(b.dir)
            b.dir.mkdir(exist_ok=True)
            try:
                yield b
                if not b.published:
                    b.publish()
            except BaseException as e:
                if not resume:
                    shutil.rmtree(b.dir, ignore_errors=True)
                full = out_of_space(e, b.dir, f"{stage}/{fp}")
                if full is not None and full is not e:
                    raise full from e
                raise

    def building(self) -> list[str]:
        """`<stage>/<fingerprint>` of every build running now in this workspace (its lock is held)."""
        running = []
        for lock_path in sorted(self.root.glob(f"*/{_LOCK_PREFIX}*")):
            with open(lock_path, "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    running.append(f"{lock_path.parent.name}/{lock_path.name.removeprefix(_LOCK_PREFIX)}")
        return running

    def remove(self, stage: str, fp: str) -> None:
        """Unpublish and delete `<stage>/<fp>`, under its build lock (never while it is being
        built). Renamed away first, so readers find it whole or not at all; a removal cut short
        leaves a hidden `.removed-*` folder, which the next removal in that stage deletes."""
        with open(self.lock_path(stage, fp), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            final = self.artifact_dir(stage, fp)
            if final.is_dir():
                os.rename(final, final.parent / f".removed-{fp}-{os.getpid()}")
                _fsync_dir(final.parent)
        for leftover in (self.root / stage).glob(".removed-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def upstream(self, stage: str, fp: str) -> dict[str, str]:
        """stage -> fingerprint of every artifact upstream of `<stage>/<fp>`, nearest first: the
        manifests' inputs that name an artifact of one of this workspace's stages, followed
        through those still published."""
        found: dict[str, str] = {}
        todo = [(stage, fp)]
        while todo:
            stage, fp = todo.pop(0)
            try:
                inputs = read_manifest(self.artifact_dir(stage, fp)).get("inputs", {})
            except ArtifactError:
                continue  # removed: what it was made from is unknown
            for name, value in inputs.items():
                if name not in found and _FINGERPRINT.fullmatch(str(value)) and (self.root / name).is_dir():
                    found[name] = value
                    todo.append((name, value))
        return found

    def artifacts(self, stage: str | None = None) -> list[dict[str, Any]]:
        """Published artifacts, newest first, with their manifests."""
        out = []
        if not self.root.is_dir():
            return []
        stages = [stage] if stage else sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")
        for s in stages:
            sdir = self.root / s
            if not sdir.is_dir():
                continue
            for d in sdir.iterdir():
                if d.name.startswith(".") or not (d / MANIFEST).is_file():
                    continue
                try:
                    m = read_manifest(d)
                except ArtifactError:
                    continue
                out.append({"stage": s, "fingerprint": d.name, "path": str(d), "manifest": m})
        out.sort(key=lambda a: a["manifest"].get("created", ""), reverse=True)
        return out

    def resolve(self, stage: str, which: str = "latest") -> ArtifactRef:
        """`latest`, a full fingerprint, or an unambiguous prefix of one."""
        found = self.artifacts(stage) if self.root.is_dir() else []
        if not found:
            raise ArtifactError(f"no published {stage} artifact in {self.root}")
        if which == "latest":
            return self.ref(stage, found[0]["fingerprint"])
        matches = [a for a in found if a["fingerprint"].startswith(which)]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise ArtifactError(f"{what} {stage} artifact matches {which!r} in {self.root}")
        return self.ref(stage, matches[0]["fingerprint"])
