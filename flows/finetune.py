"""Fine-tuning as a flow: a pretrained model -> a chat model (sft, dpo or distill)."""

from __future__ import annotations

from prefect import flow

from flows.common import STAGE_FLOW, ConfigParameter
from lm_core.config import Config
from lm_core.finetune.stage import resolve_base
from lm_core.workspace import ArtifactRef, Workspace
from tasks.finetune import finetune


def finetune_model(config: Config, pretrained: ArtifactRef | None = None, force: bool = False) -> ArtifactRef:
    """The finetune task on the base `finetune.base` names (`pretrain`: `pretrained` when given,
    else the newest pretrained model), inside whichever flow calls it (this one, or the lifecycle)."""
    base = resolve_base(config, pretrained, Workspace(config.workspace))
    ref = finetune(config, base, str(config.workspace), force)
    print(f"chat model: {ref.path} ({ref.stats.get('method')}, {ref.stats.get('steps')} steps)")
    return ref


@flow(name="finetune", **STAGE_FLOW)
def finetune_flow(config: ConfigParameter, base: str | None = None, force: bool = False) -> ArtifactRef:
    """Fine-tune the model `base` names, by default `finetune.base` (`pretrain`: the newest
    pretrained model; or a fingerprint, a checkpoint folder, a `models:/` URI)."""
    if base:
        config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"base": base})})
    return finetune_model(config, None, force)
