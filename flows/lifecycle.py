"""The whole lifecycle as one flow, each stage group a subflow that also runs alone.

data (crawl -> clean -> tokenize -> chunk) -> pretrain
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.data import DataArtifacts, data_flow, with_runner
from flows.pretrain import pretrain_flow
from lm_core.config import Config
from lm_core.workspace import ArtifactRef


class LifecycleArtifacts(BaseModel):
    data: DataArtifacts
    pretrain: ArtifactRef


@flow(name="lifecycle", log_prints=True)
def lifecycle_flow(config: Config, force: bool = False) -> LifecycleArtifacts:
    data = with_runner(data_flow, config)(config, force)
    model = pretrain_flow(config, data.chunk.fingerprint, force)
    return LifecycleArtifacts(data=data, pretrain=model)
