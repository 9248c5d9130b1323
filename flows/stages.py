"""A flow per stage, made from its declaration (lm_core/stages.py), that re-runs it alone on
artifacts already in the workspace: its first input named by a parameter of its own (`data`,
`model`, `crawl_artifact`, ...: latest by default, or a fingerprint). What `lmforge stage NAME`
runs, and what the deployments of the stages that are scheduled alone run."""

from __future__ import annotations

import inspect

from prefect import Flow, flow

from flows.common import STAGE_FLOW, ConfigParameter
from flows.review_gate import review_gate
from lm_core.stages import STAGES, Stage, resolve_input
from lm_core.workspace import ArtifactRef, Workspace
from tasks.stage_task import run_stage
from tasks.ui_artifacts import send_schedule_hint


def stage_flow(stage: Stage) -> Flow:
    def rerun(**params) -> ArtifactRef:
        config = params["config"]
        send_schedule_hint()
        given = {}
        if stage.inputs:
            spec = params[stage.input_param]
            given[stage.inputs[0]] = resolve_input(stage, config, spec, Workspace(config.workspace))
        ref = run_stage(stage.name, config, given, params["force"], params.get("refresh", False))
        if stage.name == "register":
            review_gate(config, ref)  # registry.human_review: waits for people when the gate says champion
        return ref

    # Prefect reads a flow's parameters (its deployment's form in the UI) from its signature.
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("config", keyword, annotation=ConfigParameter)]
    if stage.inputs:
        parameters.append(
            inspect.Parameter(stage.input_param, keyword, default=stage.input_default, annotation=str | None)
        )
    parameters.append(inspect.Parameter("force", keyword, default=False, annotation=bool))
    if stage.refreshable:
        parameters.append(inspect.Parameter("refresh", keyword, default=False, annotation=bool))
    rerun.__signature__ = inspect.Signature(parameters, return_annotation=ArtifactRef)
    rerun.__name__ = rerun.__qualname__ = f"{stage.name}_flow"  # a deployment's entrypoint names it
    rerun.__doc__ = stage.description
    return flow(name=stage.name, description=stage.description, **STAGE_FLOW)(rerun)


STAGE_FLOWS = {stage.name: stage_flow(stage) for stage in STAGES}
globals().update({f"{name}_flow": a_flow for name, a_flow in STAGE_FLOWS.items()})  # importable by name
