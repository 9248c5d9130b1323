"""The peers' code: each at one pinned commit, as a plain work tree in the bench's cache.

    ~/.cache/lmforge-bench/peers/<name>-<commit[:12]>/

A missing tree is filled from a git repository holding the commit: `--peer-git name=PATH` (a
local clone or bare repository), or else GitHub, fetched at exactly that commit. Nothing in the
tree is edited: the bench configures the peers, never patches them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("LMFORGE_BENCH_CACHE", Path.home() / ".cache" / "lmforge-bench"))


@dataclass(frozen=True)
class Peer:
    name: str
    repo: str  # owner/name on GitHub
    commit: str

    @property
    def tree(self) -> Path:
        return CACHE / "peers" / f"{self.name}-{self.commit[:12]}"


NANOGPT = Peer("nanoGPT", "karpathy/nanoGPT", "3adf61e154c3fe3fca428ad6bc3818b27a3b8291")
NANOCHAT = Peer("nanochat", "karpathy/nanochat", "92d63d4e8bb4df75c3b71618f31ddde2378b2bcd")


def ensure_tree(peer: Peer, git_source: str | None = None) -> Path:
    """The peer's work tree at its pinned commit, extracted into the cache if not there yet."""
    if peer.tree.is_dir():
        return peer.tree
    peer.tree.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=peer.tree.parent) as tmp:
        archive = Path(tmp) / "tree.tar"
        git_dir = Path(git_source) if git_source else _fetch_from_github(peer, Path(tmp) / "git")
        with archive.open("wb") as out:
            subprocess.run(["git", f"--git-dir={_git_dir(git_dir)}", "archive", peer.commit], stdout=out, check=True)
        staged = Path(tmp) / "tree"
        with tarfile.open(archive) as tar:
            tar.extractall(staged, filter="data")
        staged.rename(peer.tree)  # whole or not at all: a half-extracted tree is never used
    return peer.tree


def _fetch_from_github(peer: Peer, into: Path) -> Path:
    url = f"https://github.com/{peer.repo}.git"
    subprocess.run(["git", "init", "-q", "--bare", str(into)], check=True)
    try:
        subprocess.run(["git", f"--git-dir={into}", "fetch", "-q", "--depth", "1", url, peer.commit], check=True)
    except subprocess.CalledProcessError:
        shutil.rmtree(into, ignore_errors=True)
        raise SystemExit(
            f"could not fetch {peer.repo} at {peer.commit} from GitHub; give a local clone that holds the commit "
            f"with --peer-git {peer.name.lower()}=PATH, or extract it yourself into {peer.tree}"
        ) from None
    return into


def _git_dir(path: Path) -> Path:
    """A clone's .git folder, or the path itself (a bare repository)."""
    return path / ".git" if (path / ".git").exists() else path
