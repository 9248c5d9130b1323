"""The whole lifecycle as one flow run: the data stages as a subflow, the model stages as its tasks.

data (crawl -> clean -> tokenize -> chunk -> stats) -> pretrain -> evaluate -> register
                                                    -> finetune -> evaluate -> register   (finetune.enabled)

The data stages run as the `data` subflow because its task runner is the config's (threads,
processes, Dask or Ray) for the per-shard tasks. The model stages are tasks of this flow run, the
same tasks their own flows (`pretrain`, `evaluate`, ...) run when a stage is re-run alone: a
subflow run per stage would cost a fifth of a second each, in API calls and the server's
bookkeeping, and fill the runs list with eight runs per lifecycle.

The base model is evaluated and registered under the run's name; the chat model fine-tuned from
it under `<name>-chat`, with a lineage tag to the base model's version.

The model stages take the chunk artifact as a reference read afresh from the workspace, not as
the `data` subflow's result: Prefect records a subflow's result passed to a task as a `flow_run`
input, which its UI cannot show (the run's Task Runs tab then lists none, and the task's page
stays blank).

With `registry.human_review`, a registration the gate would make champion pauses the run after
`register` until people decide (flows/review_gate.py); without it the run never pauses.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.common import STAGE_FLOW, ConfigParameter
from flows.data import DataArtifacts, data_flow, with_runner
from flows.review_gate import review_gate
from lm_core.finetune.stage import resolve_base
from lm_core.workspace import ArtifactRef, Workspace
from tasks.stage_task import run_stage
from tasks.ui_artifacts import send_schedule_hint


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
    send_schedule_hint()
    data = with_runner(data_flow, config)(config, force, refresh)
    chunk = Workspace(config.workspace).ref("chunk", data.chunk.fingerprint)  # not the subflow's result
    model = run_stage("pretrain", config, {"chunk": chunk}, force)
    scores = run_stage("evaluate", config, {"model": model}, force)  # on the blocks it was trained on
    version = run_stage("register", config, {"evaluate": scores}, force)
    review_gate(config, version)  # registry.human_review: waits for people when the gate says champion
    out = LifecycleArtifacts(data=data, pretrain=model, evaluate=scores, registration=version)
    if config.finetune.enabled:
        base = resolve_base(config, model, Workspace(config.workspace))  # finetune.base: `pretrain` is this model
        out.finetune = run_stage("finetune", config, {"base": base}, force)
        out.chat_evaluate = run_stage("evaluate", config, {"model": out.finetune}, force)
        out.chat_registration = run_stage("register", config, {"evaluate": out.chat_evaluate}, force)
        review_gate(config, out.chat_registration)
    return out
