"""The data half of the lifecycle: the stages declared with `flow="data"` (lm_core/stages.py),
in order: crawl -> clean -> tokenize -> chunk -> stats.

Each stage takes the artifact of the one it names as input; stages whose inputs and config are
unchanged are cache hits: Prefect shows them as Cached and nothing is recomputed. One stage is
re-run alone by its own flow (flows/stages.py).

The sources are crawled once per config; `refresh` fetches them again as a new crawl snapshot
(the nightly `data` deployment does). The stages after it rebuild only when the pages changed:
clean takes the crawl's content digest, not its fingerprint.
"""

from __future__ import annotations

from prefect import flow
from pydantic import create_model

from flows.common import STAGE_FLOW, ConfigParameter
from flows.runners import task_runner
from lm_core.config import Config
from lm_core.stages import stages_in
from lm_core.workspace import ArtifactRef
from tasks.stage_task import run_stage
from tasks.ui_artifacts import send_schedule_hint

DATA_STAGES = stages_in("data")
DataArtifacts = create_model("DataArtifacts", **{s.name: (ArtifactRef, ...) for s in DATA_STAGES})


@flow(name="data", **STAGE_FLOW)
def data_flow(config: ConfigParameter, force: bool = False, refresh: bool = False) -> DataArtifacts:
    send_schedule_hint()
    refs: dict[str, ArtifactRef] = {}
    for stage in DATA_STAGES:
        inputs = {name: refs[name] for name in stage.inputs if name in refs}
        refs[stage.name] = run_stage(stage.name, config, inputs, force, refresh)
    return DataArtifacts(**refs)


def with_runner(a_flow, config: Config):
    """The flow with the task runner the config asks for: per-shard tasks on threads, processes,
    Dask or Ray (see flows/runners.py)."""
    return a_flow.with_options(task_runner=task_runner(config.runner))
