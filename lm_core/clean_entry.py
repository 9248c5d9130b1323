"""The clean stage's declared key and run (see lm_core/stages.py).

They live outside `lm_core/clean/` only while that package is being reworked; they belong in
`clean/fingerprint.py` and `clean/stage.py`, where `run_clean` would then take the key instead of
hashing its inputs a second time (a cheap hash of the config and the crawl's content digest)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lm_core.clean.fingerprint import STAGE, clean_fingerprint, clean_inputs
from lm_core.workspace import ArtifactRef, StageKey, Workspace

if TYPE_CHECKING:
    from lm_core.config import Config
    from lm_core.stages import Inputs, StageRun


def clean_key(cfg: Config, inputs: Inputs, ws: Workspace) -> StageKey:
    crawl = inputs["crawl"]
    fp = clean_fingerprint(cfg.clean, crawl)
    return StageKey(stage=STAGE, fingerprint=fp, config=cfg.clean.fingerprint_fields(), inputs=clean_inputs(crawl))


def clean_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    from lm_core.clean.stage import run_clean  # trafilatura, datasketch: only when there is cleaning to do

    return run_clean(cfg.clean, inputs["crawl"], ws, run.map_shards, run.progress)
