"""Registration as a flow: an evaluated model -> a version of the registered model in MLflow,
`challenger` always, `champion` when it passes the gate against the current champion."""

from __future__ import annotations

from prefect import flow

from flows.common import STAGE_FLOW, ConfigParameter
from lm_core.config import Config
from lm_core.workspace import ArtifactRef, Workspace
from tasks.register import register


def register_model(config: Config, scores: ArtifactRef, force: bool = False) -> ArtifactRef:
    """The register task on the model an evaluate artifact scored, inside whichever flow calls
    it (this one, or the lifecycle)."""
    ref = register(config, scores, str(config.workspace), force)
    s = ref.stats
    print(f"{s['model_uri']}: {s['decision']} ({s['reason']})")
    return ref


@flow(name="register", **STAGE_FLOW)
def register_flow(config: ConfigParameter, evaluation: str = "latest", force: bool = False) -> ArtifactRef:
    """Register the model the evaluate artifact `evaluation` (latest, or a fingerprint) scored."""
    return register_model(config, Workspace(config.workspace).resolve("evaluate", evaluation), force)
