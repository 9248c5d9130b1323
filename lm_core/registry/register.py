"""Register a model version in the MLflow model registry, with the champion/challenger aliases.

Every new version gets the alias `challenger`; it also takes `champion` when the gate
(`gate.py`) says so. Each version carries, as tags, its lineage (the fingerprints the caller
passes), its metrics (`metric.<name>`), the gate's decision and reason (`lmforge.decision`,
`lmforge.reason`) and the champion's scores it was compared with, so the registry alone tells
why the champion is the champion.

The caller orchestrates: `current_champion` → score the champion on the challenger's sets →
`register_model` with both models' metrics.

A registration given a `key` (the register stage's fingerprint) can be interrupted anywhere and
run again: its logged model, its version and its variants carry the key as a tag, so a rerun
finds what the first run made (`find_registration`) and completes it (the aliases its decision
gives) instead of making it twice. MLflow makes a version and its aliases in separate calls: a
kill between them leaves a version without aliases, which only its decision tag can complete.

With `registry.human_review`, a version the gate would make champion (when there is a champion
to compare it with) is registered as challenger only, tagged `lmforge.review.status=awaiting`
and `lmforge.gate_decision=champion`; `lm_core.registry.promote.apply_review` records what people
decide, and moves `champion` when they approve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
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
CHAMPION_SCORES_TAG = "lmforge.champion_scores"  # its scores on the same sets, as JSON
FINGERPRINT_TAG = "lmforge.register_fingerprint"  # the registration's key: what finds it again
# registry.human_review: a version the gate would make champion waits for people as challenger
REVIEW_STATUS_TAG = "lmforge.review.status"  # awaiting, then approved / rejected / timed_out
GATE_DECISION_TAG = "lmforge.gate_decision"  # what the automatic gate said: champion
AWAITING = "awaiting"


@dataclass(frozen=True)
class RegistrationResult:
    name: str
    version: str
    model_uri: str  # models:/<name>/<version>: what `load_text_model` and `mlflow models serve` take
    logged_model_uri: str  # models:/<model_id>: the logged model in its run
    aliases: tuple[str, ...]
    champion: bool
    reason: str
    compared_with: str | None = None  # the champion version at the time, if there was one
    champion_scores: dict[str, float] | None = None  # its scores on the same sets, if it was scored
    review: str | None = None  # registry.human_review: awaiting, approved, rejected, timed_out

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
    key: str | None = None,
    about: str = "",
    model_description: str = "",
) -> RegistrationResult:
    """Log `model_dir` into run `run_id`, register it as a new version of `name`, and set its
    aliases by the gate.

    `champion_metrics` are the current champion's scores on the same sets as `metrics`, and
    `champion_version` the version they belong to. Whether a champion exists is read from the
    registry, not inferred from `champion_metrics`: when a champion exists but was not scored
    (or another version became champion since it was), the metrics recorded at its
    registration stand in, and the reason says so. `key`: makes the registration resumable
    (see the module's docstring). `about`: what this model is and what it learned from, the
    start of the version's description; `model_description`: the registered model's, when it
    has none (`registry.description` replaces both).
    """
    if key is not None:
        found = find_registration(tracking_uri, name, key)
        if found is not None:
            return found
    client = registry_client(tracking_uri)
    logged_uri = _logged_model(tracking_uri, run_id, model_dir, name, key)

    champion = current_champion(tracking_uri, name)
    basis, compared = "", None
    if champion is not None:
        scored = champion_metrics is not None and champion_version in (None, champion.version)
        compared = champion_metrics if scored else champion.metrics
        how = "scored on the same sets" if scored else "by the metrics recorded at its registration, not re-scored"
        basis = f"; compared with champion v{champion.version}, {how}"
    decision = decide(cfg, metrics, compared)
    reason = decision.reason + basis
    # people have the last word on replacing a champion; the first model has nothing to be compared with
    awaits_review = cfg.human_review and decision.champion and champion is not None
    if awaits_review:
        reason += "; awaits human review (registry.human_review): challenger until people approve it"

    _ensure_registered_model(client, name, cfg.description or model_description, replace=bool(cfg.description))
    version_tags = {
        **{k: str(v) for k, v in tags.items()},
        **{f"{METRIC_TAG}{k}": repr(float(v)) for k, v in metrics.items() if v is not None},
        DECISION_TAG: CHAMPION if decision.champion and not awaits_review else CHALLENGER,
        REASON_TAG: reason,
        **({GATE_DECISION_TAG: CHAMPION, REVIEW_STATUS_TAG: AWAITING} if awaits_review else {}),
        **({COMPARED_TAG: champion.version} if champion else {}),
        **({CHAMPION_SCORES_TAG: json.dumps(champion_metrics)} if champion and champion_metrics is not None else {}),
        **({FINGERPRINT_TAG: key} if key else {}),
    }
    model_id = logged_uri.removeprefix("models:/")
    mv = client.create_model_version(
        name,
        # The files' location, not `models:/<model_id>`: MLflow resolves that URI with the
        # process-wide tracking URI, not this client's.
        source=client.get_logged_model(model_id).artifact_location,
        run_id=run_id,
        tags=version_tags,
        description=_describe(cfg, about, metrics, reason),
        model_id=model_id,
    )
    result = _result(name, mv, version_tags)
    _set_aliases(client, name, result.version, result.aliases)
    return result


def find_registration(tracking_uri: str, name: str, key: str) -> RegistrationResult | None:
    """The version a registration with `key` made, if any, with the aliases its decision gave it
    set again where a kill may have cut that short (unless a later registration of `name` has
    come since: its aliases stand)."""
    client = registry_client(tracking_uri)
    mv = _version_by_key(client, name, key)
    if mv is None:
        return None
    result = _result(name, mv, mv.tags)
    if not _newer_versions(client, name, result.version, key):
        _set_aliases(client, name, result.version, result.aliases)
    return result


def register_variant(
    tracking_uri: str,
    run_id: str,
    model_dir: str | Path,
    name: str,
    alias: str,
    tags: dict[str, str],
    description: str,
    key: str | None = None,
) -> str:
    """Register another form of a registered model (an int8 copy, say) as its own version, under
    `alias` only: a variant never takes the champion or challenger aliases. Returns its version.
    With `key` (the variant's own: `<registration key>-<alias>`) a rerun finds it again."""
    client = registry_client(tracking_uri)
    found = _version_by_key(client, name, key) if key else None
    if found is not None:
        version = str(found.version)
        if not _newer_versions(client, name, version, key):
            _set_aliases(client, name, version, (alias,))
        return version
    logged_uri = _logged_model(tracking_uri, run_id, model_dir, f"{name}-{alias}", key)
    model_id = logged_uri.removeprefix("models:/")
    mv = client.create_model_version(
        name,
        source=client.get_logged_model(model_id).artifact_location,
        run_id=run_id,
        tags={**{k: str(v) for k, v in tags.items()}, **({FINGERPRINT_TAG: key} if key else {})},
        description=description,
        model_id=model_id,
    )
    _set_aliases(client, name, str(mv.version), (alias,))
    return str(mv.version)


# ----------------------------------------------------------------------------- steps


def _logged_model(tracking_uri: str, run_id: str, model_dir: str | Path, name: str, key: str | None) -> str:
    """The model logged into the run: the one an interrupted registration with the same key
    logged completely, else a new one. A logging that a kill cut short stays PENDING: marked
    FAILED here, so that MLflow's UI does not show it as in progress for good."""
    if key is None:
        return log_text_model(tracking_uri, run_id, model_dir, name=name)
    client = MlflowClient(tracking_uri)
    experiment = client.get_run(run_id).info.experiment_id
    found = client.search_logged_models(
        [experiment],
        filter_string=f"tags.`{FINGERPRINT_TAG}` = '{key}' AND source_run_id = '{run_id}' AND name = '{name}'",
    )
    for logged in found:
        if logged.status == LoggedModelStatus.READY:
            return f"models:/{logged.model_id}"
    for logged in found:
        if logged.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
    return log_text_model(tracking_uri, run_id, model_dir, name=name, tags={FINGERPRINT_TAG: key})


def _set_aliases(client: MlflowClient, name: str, version: str, aliases: tuple[str, ...]) -> None:
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)


def _version_by_key(client: MlflowClient, name: str, key: str) -> ModelVersion | None:
    try:
        versions = client.search_model_versions(f"name = '{name}' and tag.`{FINGERPRINT_TAG}` = '{key}'")
    except MlflowException:  # no such registered model yet
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _newer_versions(client: MlflowClient, name: str, version: str, key: str) -> bool:
    """Whether a registration other than `key`'s (and its variants') made a version after `version`."""
    for mv in client.search_model_versions(f"name = '{name}'"):
        if int(mv.version) > int(version) and not mv.tags.get(FINGERPRINT_TAG, "").startswith(key):
            return True
    return False


def _result(name: str, mv: ModelVersion, tags: dict[str, str]) -> RegistrationResult:
    """What a version's tags say of its registration: its decision makes its aliases."""
    champion = tags.get(DECISION_TAG) == CHAMPION
    scores = tags.get(CHAMPION_SCORES_TAG)
    return RegistrationResult(
        name=name,
        version=str(mv.version),
        model_uri=f"models:/{name}/{mv.version}",
        logged_model_uri=f"models:/{mv.model_id}" if getattr(mv, "model_id", None) else "",
        aliases=(CHALLENGER, CHAMPION) if champion else (CHALLENGER,),
        champion=champion,
        reason=tags.get(REASON_TAG, ""),
        compared_with=tags.get(COMPARED_TAG),
        champion_scores=json.loads(scores) if scores else None,
        review=tags.get(REVIEW_STATUS_TAG),
    )


def _ensure_registered_model(client: MlflowClient, name: str, description: str, replace: bool) -> None:
    """Create registered model `name` with `description`; an existing one gets it when `replace`
    (the config names one) or when it has none (a description written in MLflow's UI stays)."""
    try:
        client.create_registered_model(name, description=description or None)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
        if description and (replace or not client.get_registered_model(name).description):
            client.update_registered_model(name, description=description)


def _describe(cfg: RegistryConfig, about: str, metrics: dict[str, float], reason: str) -> str:
    scores = ", ".join(f"{k} {float(v):.4g}" for k, v in sorted(metrics.items()) if v is not None)
    lines = [cfg.description or "", about, f"Scores: {scores or 'none'}.", f"Gate: {reason}."]
    return "\n\n".join(line for line in lines if line)
