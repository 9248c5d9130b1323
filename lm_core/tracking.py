"""MLflow tracking with explicit run ids.

Everything goes through `MlflowClient` with the run id in hand: the fluent API keeps its active
run per thread, which breaks inside Prefect's thread pools. Only one process writes (rank 0 of a
training). The embedded default store is `sqlite:///<workspace>/mlflow.db`.

What the MLflow UI shows follows from names chosen here:
- experiments are marked as model training (`mlflow.experimentKind`), not GenAI, so that MLflow
  opens them on their runs rather than on an empty traces view;
- metrics are named for MLflow's charts (`chart_name`): the UI groups charts by the part of a
  name before its last `/`, puts those groups in alphabetical order and the names without a `/`
  after them. Training curves are `train/*` (loss, lr) and validation curves `val/*` (loss, bpb,
  ppl), the only two groups, so they come first; one-off scores (`eval.*`, `int8.*`) and
  throughput (tokens_per_s, mfu, grad_norm, ...) follow under "Model metrics";
- each run names its source (`mlflow.source.*`) and its data (dataset inputs, `log_dataset`).
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

from lm_core.config import default_tracking_uri  # noqa: F401  (re-exported: where callers look for it)
from lm_core.mlflow_store import ensure_store
from lm_core.workspace import content_digest

log = logging.getLogger(__name__)

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
_BATCH = 100  # params per log_batch call (MLflow's limit)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"  # MLflow 3's kind for training runs (the other: genai_development)
DATASET_CONTEXT_TAG = "mlflow.data.context"  # training / validation, as MLflow's own autologging tags it

# loop name -> chart name (see the module's docstring); prefixes first, whole names after
_CHART_NAMES = {"loss": "train/loss", "lr": "train/lr", "train_grad_norm": "grad_norm"}
_CHART_PREFIXES = (("train_", "train/"), ("val_", "val/"), ("heldout_", "val/"))


def chart_name(key: str) -> str:
    """The MLflow name of a figure a training loop reports: `loss` -> `train/loss`, `val_bpb` ->
    `val/bpb`, fine-tuning's `train_loss` -> `train/loss` and `heldout_loss` -> `val/loss`; other
    names are kept."""
    if key in _CHART_NAMES:
        return _CHART_NAMES[key]
    for old, new in _CHART_PREFIXES:
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


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
        ensure_store(tracking_uri)  # a workspace's new SQLite store is made whole before MLflow opens it
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        if run_id is None:
            exp_id = training_experiment(self.client, tracking_uri, experiment)
            tags = {**source_tags((tags or {}).get("lmforge.stage", run_name)), **(tags or {})}
            run_id = self.client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
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
        """Figures under their chart names (`chart_name`)."""
        now = int(time.time() * 1000)
        items = [Metric(chart_name(k), float(v), now, step) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)

    def log_dataset(
        self,
        name: str,
        digest: str,
        source: str | Path,
        context: str,
        schema: list[dict[str, Any]] | None = None,
        profile: dict[str, Any] | None = None,
    ) -> None:
        """Record data the run learned from (`context` training) or was validated on (validation)
        as an MLflow dataset input: where it lies, its digest (an artifact's fingerprint), the
        columns of its rows and a few figures. Logging the same dataset again is a no-op."""
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="local",
            source=json.dumps({"uri": str(source)}),
            schema=json.dumps({"mlflow_colspec": schema}) if schema else None,
            profile=json.dumps(profile) if profile else None,
        )
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, [InputTag(DATASET_CONTEXT_TAG, context)])])

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


# the rows of the data a run logs as its inputs, as MLflow's column specs
_TOKENS = [{"name": "tokens", "type": "array", "items": {"type": "long"}, "required": True}]
_MESSAGES = {
    "type": "array",
    "items": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}}},
}
_EXAMPLE_FILES = {  # a fine-tuning's data/ files: name, context, columns
    "train.jsonl": ("chats-train", "training", [{"name": "messages", **_MESSAGES}]),
    "heldout.jsonl": ("chats-heldout", "validation", [{"name": "messages", **_MESSAGES}]),
    "train_preferences.jsonl": ("preferences-train", "training", None),
    "heldout_preferences.jsonl": ("preferences-heldout", "validation", None),
}
_PREFERENCES = [  # a prompt is a string (one user message) or messages
    {"name": "prompt", "type": "string"},
    {"name": "chosen", "type": "string"},
    {"name": "rejected", "type": "string"},
]


def log_chunk_data(tracker: MlflowTracker, chunk_dir: Path, fingerprint: str, stats: dict[str, Any]) -> None:
    """A chunk artifact's train and val blocks as the run's training and validation datasets
    (digest: the chunk's fingerprint)."""
    for split, context in (("train", "training"), ("val", "validation")):
        figures = stats.get(split) or {}
        if not figures.get("blocks"):
            continue
        profile = {k: figures[k] for k in ("blocks", "tokens", "documents", "bytes") if k in figures}
        profile["block_tokens"] = stats.get("seq_len", 0) + 1
        tracker.log_dataset(f"chunk-{split}", fingerprint, chunk_dir / split, context, _TOKENS, profile)


def log_example_files(tracker: MlflowTracker, folder: Path, published: Path) -> None:
    """A fine-tuning's chats (or preference pairs) in `folder` as its training and validation
    datasets, named by where they are published (`published`) and digested by content."""
    for file, (name, context, schema) in _EXAMPLE_FILES.items():
        path = folder / file
        if path.is_file():
            rows = sum(1 for line in path.open(encoding="utf-8") if line.strip())
            schema = schema or _PREFERENCES
            tracker.log_dataset(name, content_digest([path]), published / file, context, schema, {"examples": rows})


def training_experiment(client: MlflowClient, tracking_uri: str, name: str) -> str:
    """The id of experiment `name`, created if need be, marked as model training."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = artifact_location(tracking_uri, name)
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    if exp.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:  # made before lmforge marked them, or by hand
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return exp.experiment_id


def source_tags(stage: str) -> dict[str, str]:
    """What MLflow shows as a run's source: the lmforge stage, and the commit of lmforge's code
    when it runs from a git checkout."""
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": f"lmforge {stage}"}
    commit = _code_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


@functools.cache
def _code_commit() -> str | None:
    """The commit checked out where lm_core lives, if that folder is lmforge's own checkout (not
    an installed copy inside some other repository)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):  # no git here
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() / "lm_core" != here:
        return None
    return lines[1]


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
