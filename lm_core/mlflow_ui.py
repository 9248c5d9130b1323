"""Which MLflow UI, if any, shows the runs of a tracking store: what links to MLflow point at.

A tracking server (http or https) is its own UI. A local store (`sqlite:///<workspace>/mlflow.db`,
the default) has a UI only while an MLflow server serves it: `lmforge server` does, and the
command that records runs into its Prefect server learns its address (lmforge/embedded.py) and
hands it down in MLFLOW_UI_ENV. Otherwise there is no page to link to, and no link is made: a
link to a UI that is not running is a dead link.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

# {"store": the tracking URI it serves, "url": the UI's address}, set while such a server runs
MLFLOW_UI_ENV = "LMFORGE_MLFLOW_UI"


def mlflow_ui_uri(tracking_uri: str) -> str | None:
    """The address of an MLflow server showing `tracking_uri`'s runs (usable as a tracking URI
    too: it serves the same store), or None when none runs."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    try:
        served = json.loads(os.environ.get(MLFLOW_UI_ENV) or "{}")
        store, url = served.get("store"), served.get("url")
    except (ValueError, AttributeError):
        return None
    return url if store and url and same_store(store, tracking_uri) else None


# MLflow's UI (3.x) opens every experiment in its GenAI view (traces) unless the address says
# otherwise; the setting then carries over to the pages the user goes on to.
TRAINING_VIEW = "workflowType=machine_learning"


def mlflow_links(tracking_uri: str, run_id: str, model: str | None = None, version=None) -> dict[str, str]:
    """Links to the MLflow UI's pages of a run, its experiment's training runs (their charts,
    the loss first) and a registered model's version, by what they show: {"MLflow run": url,
    "MLflow experiment": url, "registered version": url}; none when no UI shows the store."""
    ui = mlflow_ui_uri(tracking_uri)
    if ui is None or not run_id:
        return {}
    parts = urlsplit(ui)  # a link never carries credentials: the browser asks for them
    base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
    links = {}
    try:
        from mlflow import MlflowClient  # only where a UI runs to link to

        # the experiment from the store itself: a local store answers without the server's round trip
        experiment = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
        links["MLflow run"] = f"{base}/#/experiments/{experiment}/runs/{run_id}?{TRAINING_VIEW}"
        links["MLflow experiment"] = f"{base}/#/experiments/{experiment}/runs?{TRAINING_VIEW}&compareRunsMode=CHART"
    except Exception:  # a link is a convenience: never fail a stage over it
        pass
    if model and version is not None:
        links["registered version"] = f"{base}/#/models/{quote(model)}/versions/{version}?{TRAINING_VIEW}"
    return links


def same_store(a: str, b: str) -> bool:
    """Two tracking URIs naming one store (SQLite files compared by their resolved paths)."""
    return _normal(a) == _normal(b)


def _normal(uri: str) -> str:
    """SQLite by its resolved path; others without a password (an announcement holds them masked)."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    parts = urlsplit(uri)
    user, at, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}{at}{host}")).rstrip("/")
