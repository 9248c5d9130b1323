"""The whole lifecycle as one flow, each stage group a subflow that also runs alone.

data (crawl -> clean -> tokenize -> chunk) -> pretrain -> evaluate -> register
                                               -> finetune -> evaluate -> register   (finetune.enabled)

The base model is evaluated and registered under the run's name; the chat model fine-tuned from
it under `<name>-chat`, with a lineage tag to the base model's version.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.data import DataArtifacts, data_flow, with_runner
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.pretrain import pretrain_flow
from flows.register import register_flow
from lm_core.config import Config
from lm_core.workspace import ArtifactRef


class LifecycleArtifacts(BaseModel):
    data: DataArtifacts
    pretrain: ArtifactRef
    evaluate: ArtifactRef
    registration: ArtifactRef
    finetune: ArtifactRef | None = None
    chat_evaluate: ArtifactRef | None = None
    chat_registration: ArtifactRef | None = None


@flow(name="lifecycle", log_prints=True)
def lifecycle_flow(config: Config, force: bool = False) -> LifecycleArtifacts:
    data = with_runner(data_flow, config)(config, force)
    model = pretrain_flow(config, data.chunk.fingerprint, force)
    scores = evaluate_flow(config, model.fingerprint, force)
    version = register_flow(config, scores.fingerprint, force)
    out = LifecycleArtifacts(data=data, pretrain=model, evaluate=scores, registration=version)
    if config.finetune.enabled:
        base = model.fingerprint if config.finetune.base == "pretrain" else None  # else: the configured base
        out.finetune = finetune_flow(config, base, force)
        out.chat_evaluate = evaluate_flow(config, out.finetune.fingerprint, force)
        out.chat_registration = register_flow(config, out.chat_evaluate.fingerprint, force)
    return out
