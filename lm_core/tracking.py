"""MLflow tracking with explicit run ids.

Everything goes through `MlflowClient` with the run id in hand: the fluent API keeps its active
run per thread, which breaks inside Prefect's thread pools. Only one process writes (rank 0 of a
training). The embedded default store is `sqlite:///<workspace>/mlflow.db`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from lm_core.config import default_tracking_uri  # noqa: F401  (re-exported: where callers look for it)

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
_BATCH = 100  # params per log_batch call (MLflow's limit)


def mlflow_ui_links(tracking_uri: str, run_id: str, model: str | None = None, version=None) -> dict[str, str]:
    """Links to the MLflow UI pages of a run (and a registered model version) when the tracking
    URI is an MLflow server (http or https); none for a local store, which has no UI running."""
    if not tracking_uri.startswith(("http://", "https://")) or not run_id:
        return {}
    parts = urlsplit(tracking_uri)  # a link never carries credentials: the browser asks for them
    base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
    links = {}
    try:
        experiment_id = MlflowClient(tracking_uri).get_run(run_id).info.experiment_id
        links["MLflow run"] = f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
    except Exception:  # a link is a convenience: never fail a stage over it
        pass
    if model and version is not None:
        links["registered version"] = f"{base}/#/models/{model}/versions/{version}"
    return links


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Beside a SQLite store, artifacts go to `mlartifacts/<experiment>` next to the database
    (MLflow's default, `./mlruns`, would follow the current directory). A tracking server
    decides for itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    return (db.parent / "mlartifacts" / experiment).resolve().as_uri()


def flatten(prefix: str, value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested config sections as dotted param names."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


class MlflowTracker:
    """One MLflow run: params, step metrics, tags, artifacts, system metrics."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        system_metrics: bool = False,
        run_id: str | None = None,
    ):
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        if run_id is None:
            exp = self.client.get_experiment_by_name(experiment)
            exp_id = (
                exp.experiment_id
                if exp
                else self.client.create_experiment(
                    experiment, artifact_location=artifact_location(tracking_uri, experiment)
                )
            )
            run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags or {}).info.run_id
        self.run_id = run_id
        self._monitor = None
        if system_metrics:
            try:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # psutil: only when asked

                self._monitor = SystemMetricsMonitor(run_id, sampling_interval=5, tracking_uri=tracking_uri)
                self._monitor.start()
            except Exception as e:  # psutil missing, or a platform without counters
                log.warning("system metrics are off: %s", e)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = flatten("", params)
        items = [Param(k, _param_value(v)) for k, v in sorted(flat.items())]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH], synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
            self.log_artifact(p)

    def finish(self, failed: bool = False) -> None:
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception:
                pass
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _param_value(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s if len(s) <= _MAX_PARAM_LEN else s[: _MAX_PARAM_LEN - 3] + "..."


def loss_curve_png(history: list[dict[str, float]], path: Path, title: str) -> Path | None:
    """Training loss and validation loss against tokens seen, as a PNG."""
    import matplotlib  # only for the loss curve's picture

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["tokens"], r["loss"]) for r in history if "loss" in r and "tokens" in r]
    val = [(r["tokens"], r["val_loss"]) for r in history if "val_loss" in r and "tokens" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation loss", markersize=3)
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
