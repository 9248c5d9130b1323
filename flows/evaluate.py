"""Evaluation as a flow: a trained model -> perplexity and bits-per-byte on the validation blocks
and any texts, BLEU and chrF on prompt/reference pairs."""

from __future__ import annotations

from prefect import flow

from lm_core.config import Config
from lm_core.workspace import ArtifactError, ArtifactRef, Workspace
from tasks.evaluate import evaluate


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    config: Config, pretrain_artifact: str = "latest", force: bool = False, model_stage: str = "pretrain"
) -> ArtifactRef:
    """Evaluate a model artifact (`model_stage`: pretrain, or finetune for a chat model) on the
    chunk artifact it was trained on."""
    ws = Workspace(config.workspace)
    try:
        model = ws.resolve(model_stage, pretrain_artifact)
    except ArtifactError:
        if model_stage != "pretrain" or pretrain_artifact == "latest":
            raise
        model = ws.resolve("finetune", pretrain_artifact)  # a fingerprint of a chat model
    chunk = ws.ref("chunk", model.manifest()["inputs"]["chunk"])
    ref = evaluate(config.evaluate, model, chunk, str(config.workspace), force)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in ref.stats.items() if k.startswith(("val_bpb", "bleu.", "chrf.")))
    print(f"evaluation {ref.fingerprint}: {shown}")
    return ref
