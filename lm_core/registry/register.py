"""Register a model version in the MLflow model registry, with the champion/challenger aliases.

Every new version gets the alias `challenger`; it also takes `champion` when the gate
(`gate.py`) says so. Each version carries, as tags, its lineage (the fingerprints the caller
passes), its metrics (`metric.<name>`) and the gate's decision and reason (`lmforge.decision`,
`lmforge.reason`), so the registry alone tells why the champion is the champion.

The caller orchestrates: `current_champion` → score the champion on the challenger's sets →
`register_model` with both models' metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

from lm_core.config import RegistryConfig
from lm_core.model_spec import registry_client
from lm_core.registry.gate import decide
from lm_core.registry.log import log_text_model

CHAMPION, CHALLENGER = "champion", "challenger"
METRIC_TAG = "metric."
DECISION_TAG, REASON_TAG = "lmforge.decision", "lmforge.reason"
COMPARED_TAG = "lmforge.compared_with"  # the champion version the gate compared against


@dataclass(frozen=True)
class RegistrationResult:
    name: str
    version: str
    model_uri: str  # models:/<name>/<version>: what `load_text_model` and `mlflow models serve` take
    logged_model_uri: str  # models:/<model_id>: the logged model in its run
    aliases: tuple[str, ...]
    champion: bool
    reason: str

    @property
    def decision(self) -> str:
        return CHAMPION if self.champion else CHALLENGER


class Champion(NamedTuple):
    version: str
    model_uri: str  # models:/<name>/<version>
    metrics: dict[str, float]  # as recorded when it was registered


def current_champion(tracking_uri: str, name: str) -> Champion | None:
    """The version holding the `champion` alias of registered model `name`, if any."""
    try:
        mv = registry_client(tracking_uri).get_model_version_by_alias(name, CHAMPION)
    except MlflowException as e:
        if e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):  # no such model, or no champion
            return None
        raise
    version = str(mv.version)  # an int in some MLflow versions
    return Champion(version, f"models:/{name}/{version}", recorded_metrics(mv.tags))


def recorded_metrics(version_tags: dict[str, str]) -> dict[str, float]:
    return {k.removeprefix(METRIC_TAG): float(v) for k, v in version_tags.items() if k.startswith(METRIC_TAG)}


def register_model(
    cfg: RegistryConfig,
    tracking_uri: str,
    run_id: str,
    model_dir: str | Path,
    metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    tags: dict[str, str],
    name: str,
    champion_version: str | None = None,
) -> RegistrationResult:
    """Log `model_dir` into run `run_id`, register it as a new version of `name`, and set its
    aliases by the gate.

    `champion_metrics` are the current champion's scores on the same sets as `metrics`, and
    `champion_version` the version they belong to. Whether a champion exists is read from the
    registry, not inferred from `champion_metrics`: when a champion exists but was not scored
    (or another version became champion since it was), the metrics recorded at its
    registration stand in, and the reason says so.
    """
    client = registry_client(tracking_uri)
    logged_uri = log_text_model(tracking_uri, run_id, model_dir, name=name)

    champion = current_champion(tracking_uri, name)
    basis, compared = "", None
    if champion is not None:
        scored = champion_metrics is not None and champion_version in (None, champion.version)
        compared = champion_metrics if scored else champion.metrics
        how = "scored on the same sets" if scored else "by the metrics recorded at its registration, not re-scored"
        basis = f"; compared with champion v{champion.version}, {how}"
    decision = decide(cfg, metrics, compared)
    reason = decision.reason + basis

    _ensure_registered_model(client, name, cfg.description)
    version_tags = {
        **{k: str(v) for k, v in tags.items()},
        **{f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items() if v is not None},
        DECISION_TAG: CHAMPION if decision.champion else CHALLENGER,
        REASON_TAG: reason,
        **({COMPARED_TAG: champion.version} if champion else {}),
    }
    model_id = logged_uri.removeprefix("models:/")
    mv = client.create_model_version(
        name,
        # The files' location, not `models:/<model_id>`: MLflow resolves that URI with the
        # process-wide tracking URI, not this client's.
        source=client.get_logged_model(model_id).artifact_location,
        run_id=run_id,
        tags=version_tags,
        description=_describe(cfg, metrics, reason),
        model_id=model_id,
    )
    version = str(mv.version)
    aliases = (CHALLENGER, CHAMPION) if decision.champion else (CHALLENGER,)
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    return RegistrationResult(
        name=name,
        version=version,
        model_uri=f"models:/{name}/{version}",
        logged_model_uri=logged_uri,
        aliases=aliases,
        champion=decision.champion,
        reason=reason,
    )


def _ensure_registered_model(client: MlflowClient, name: str, description: str | None) -> None:
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        if description:
            client.update_registered_model(name, description=description)


def _describe(cfg: RegistryConfig, metrics: dict[str, float], reason: str) -> str:
    scores = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(metrics.items()) if v is not None)
    lines = [cfg.description or "", f"Scores: {scores or 'none'}.", f"Gate: {reason}."]
    return "\n\n".join(line for line in lines if line)


def register_variant(
    tracking_uri: str, run_id: str, model_dir: str | Path, name: str, alias: str, tags: dict[str, str], description: str
) -> str:
    """Register another form of a registered model (an int8 copy, say) as its own version, under
    `alias` only: a variant never takes the champion or challenger aliases. Returns its version."""
    client = registry_client(tracking_uri)
    logged_uri = log_text_model(tracking_uri, run_id, model_dir, name=f"{name}-{alias}")
    model_id = logged_uri.removeprefix("models:/")
    mv = client.create_model_version(
        name,
        source=client.get_logged_model(model_id).artifact_location,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
        model_id=model_id,
    )
    client.set_registered_model_alias(name, alias, str(mv.version))
    return str(mv.version)
