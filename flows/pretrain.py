"""Pretraining as a flow: the blocks of a chunk artifact -> a trained GPT, tracked in MLflow."""

from __future__ import annotations

from prefect import flow

from flows.common import STAGE_FLOW, ConfigParameter
from lm_core.config import Config
from lm_core.workspace import ArtifactRef, Workspace
from tasks.pretrain import pretrain


def train_model(config: Config, blocks: ArtifactRef, force: bool = False) -> ArtifactRef:
    """The pretrain task on `blocks`, inside whichever flow calls it (this one, or the lifecycle)."""
    model = pretrain(config, blocks, str(config.workspace), force)
    print(f"weights: {model.path}/model.safetensors  (MLflow run {model.stats.get('mlflow_run_id')})")
    return model


@flow(name="pretrain", **STAGE_FLOW)
def pretrain_flow(config: ConfigParameter, data: str = "latest", force: bool = False) -> ArtifactRef:
    """Train on the chunk artifact `data` names: latest, or a fingerprint (prefix)."""
    return train_model(config, Workspace(config.workspace).resolve("chunk", data), force)
