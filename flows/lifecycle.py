"""The whole lifecycle as one flow run: the data stages as a subflow, the model stages as its tasks.

data (crawl -> clean -> tokenize -> chunk) -> pretrain -> evaluate -> register
                                               -> finetune -> evaluate -> register   (finetune.enabled)

The data stages run as the `data` subflow because its task runner is the config's (threads,
processes, Dask or Ray) for the per-shard tasks. The model stages are tasks of this flow run,
called through the same steps their own flows (`pretrain`, `evaluate`, ...) run when a stage is
re-run alone: a subflow run per stage would cost a fifth of a second each, in API calls and the
server's bookkeeping, and fill the runs list with eight runs per lifecycle.

The base model is evaluated and registered under the run's name; the chat model fine-tuned from
it under `<name>-chat`, with a lineage tag to the base model's version.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.common import STAGE_FLOW, ConfigParameter
from flows.data import DataArtifacts, data_flow, with_runner
from flows.evaluate import evaluate_model
from flows.finetune import finetune_model
from flows.pretrain import train_model
from flows.register import register_model
from lm_core.workspace import ArtifactRef


class LifecycleArtifacts(BaseModel):
    data: DataArtifacts
    pretrain: ArtifactRef
    evaluate: ArtifactRef
    registration: ArtifactRef
    finetune: ArtifactRef | None = None
    chat_evaluate: ArtifactRef | None = None
    chat_registration: ArtifactRef | None = None


@flow(name="lifecycle", **STAGE_FLOW)
def lifecycle_flow(config: ConfigParameter, force: bool = False, refresh: bool = False) -> LifecycleArtifacts:
    data = with_runner(data_flow, config)(config, force, refresh)
    model = train_model(config, data.chunk, force)
    scores = evaluate_model(config, model, force)
    version = register_model(config, scores, force)
    out = LifecycleArtifacts(data=data, pretrain=model, evaluate=scores, registration=version)
    if config.finetune.enabled:
        out.finetune = finetune_model(config, model, force)
        out.chat_evaluate = evaluate_model(config, out.finetune, force)
        out.chat_registration = register_model(config, out.chat_evaluate, force)
    return out
