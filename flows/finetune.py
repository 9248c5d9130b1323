"""Fine-tuning as a flow: a pretrained model -> a chat model (sft, dpo or distill)."""

from __future__ import annotations

from prefect import flow

from lm_core.config import Config
from lm_core.finetune.stage import resolve_base
from lm_core.workspace import ArtifactRef, Workspace
from tasks.finetune import finetune


@flow(name="finetune", log_prints=True)
def finetune_flow(config: Config, pretrain_artifact: str = "latest", force: bool = False) -> ArtifactRef:
    """Fine-tune the model `finetune.base` names (`pretrain`: the pretrain artifact given here)."""
    ws = Workspace(config.workspace)
    pretrain = ws.resolve("pretrain", pretrain_artifact) if config.finetune.base == "pretrain" else None
    ref = finetune(config, resolve_base(config, pretrain, ws), str(config.workspace), force)
    print(f"chat model: {ref.path} ({ref.stats.get('method')}, {ref.stats.get('steps')} steps)")
    return ref
