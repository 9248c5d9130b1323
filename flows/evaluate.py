"""Evaluation as a flow: a trained model -> perplexity and bits-per-byte on the validation blocks
and any texts, BLEU and chrF on prompt/reference pairs."""

from __future__ import annotations

from prefect import flow

from flows.common import STAGE_FLOW, ConfigParameter
from lm_core.config import Config
from lm_core.model_spec import find_model_artifact
from lm_core.workspace import ArtifactRef, Workspace
from tasks.evaluate import evaluate


def evaluate_model(config: Config, model: ArtifactRef, force: bool = False) -> ArtifactRef:
    """The evaluate task on `model` and the chunk artifact it was trained on, inside whichever
    flow calls it (this one, or the lifecycle)."""
    chunk = Workspace(config.workspace).ref("chunk", model.manifest()["inputs"]["chunk"])
    scores = evaluate(config.evaluate, model, chunk, str(config.workspace), force)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.stats.items() if k.startswith(("val_bpb", "bleu.", "chrf.")))
    print(f"evaluation {scores.fingerprint} of {model.stage} {model.fingerprint[:12]}: {shown}")
    return scores


@flow(name="evaluate", **STAGE_FLOW)
def evaluate_flow(config: ConfigParameter, model: str = "latest", force: bool = False) -> ArtifactRef:
    """Evaluate a model on the chunk artifact it was trained on. `model`: latest (the newest
    pretrained or fine-tuned model), a fingerprint (prefix), or a registered `models:/` URI traced
    back to the workspace artifact it was registered from."""
    ref = find_model_artifact(model, Workspace(config.workspace), config.tracking_uri)
    return evaluate_model(config, ref, force)
