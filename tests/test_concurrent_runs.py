"""Two lifecycles (`lmforge run`) started at once on one workspace both complete, agree on every
fingerprint, leave exactly one published artifact per stage and register the model once (builds
are serialised by a lock per artifact; the loser of each race finds the winner's artifact
published and reuses it, registration included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lm_core.workspace import Workspace

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("crawl", "clean", "tokenize", "chunk")  # the rows `lmforge run` prints for the data
ROW = re.compile(r"^\s+(crawl|clean|tokenize|chunk)\s+([0-9a-f]{16})\b", re.M)  # the summary's table
MODEL_STAGES = ("pretrain", "evaluate", "register")
STAGE_LINE = re.compile(r"^(\w+) +[0-9a-f]{8}  (built|cached)", re.M)  # a stage's one line


def printed_fingerprints(stdout: str) -> dict[str, str]:
    return dict(ROW.findall(stdout))


def test_two_lifecycles_at_once_on_one_workspace(tmp_path):
    ws = tmp_path / "workspace"
    lmforge = Path(sys.executable).parent / "lmforge"
    # each command keeps Prefect's home in the shared workspace (as a user's would), so the two
    # embedded Prefect servers share one fresh SQLite database
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"} | {"COLUMNS": "250"}
    cmd = [str(lmforge), "run", "--config", "configs/tiny.yaml", "--set", f"workspace={ws}"]
    cmd += ["--set", "finetune.enabled=false"]  # the chat model's stages lock the same way; spare CI the time
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=480) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, f"exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"

    first, second = (printed_fingerprints(out) for out, _ in outs)
    assert set(first) == set(STAGES), outs[0][0]
    assert first == second
    for stage in STAGES:
        # one published artifact and no `.partial-*` build left over (`.lock-*` files stay, empty)
        folders = sorted(p.name for p in (ws / stage).iterdir() if not p.name.startswith(".lock-"))
        assert len(folders) == 1 and folders[0].startswith(first[stage]), f"{stage}: {folders}"
        assert Workspace(ws).ref(stage, folders[0]).manifest()["fingerprint"] == folders[0]
    # each stage was built by one command; the other says it found it (waited for the lock, or cached)
    said = [dict(STAGE_LINE.findall(out)) for out, _ in outs]
    for stage in (*STAGES, *MODEL_STAGES):
        assert sorted(s[stage] for s in said) == ["built", "cached"], f"{stage}: {said}"
    for stage in MODEL_STAGES:
        (artifact,) = Workspace(ws).artifacts(stage)
        assert not [p for p in (ws / stage).iterdir() if p.name.startswith(".partial-")], stage
    # one registered version, and both commands report it
    registered = artifact["manifest"]["stats"]
    assert registered["version"] == "1" and registered["decision"] == "champion", registered
    assert all(registered["model_uri"] in out for out, _ in outs)
