"""What the stage tasks (tasks/stage_task.py) share: per-shard fan-out, progress, the stats
table, the training slot, and the flow run that builds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.futures import as_completed
from prefect.runtime import deployment, flow_run
from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from lm_core.progress import NullProgress, Progress
from lm_core.ui_text import model_label
from lm_core.workspace import ArtifactRef, Workspace
from tasks.ui_artifacts import readable_table, send_ui_artifact

T = TypeVar("T")
R = TypeVar("R")

# Options every stage task shares. Results are the small ArtifactRef, stored as JSON.
STAGE_TASK = dict(persist_result=True, result_serializer="json", cache_result_in_memory=False)


def prefect_run_tags() -> dict[str, str]:
    """Tags for an MLflow run or model version, naming the Prefect flow run that made it."""
    origin = prefect_origin()
    return {"prefect.flow_run_id": origin.get("prefect_flow_run_id", ""),
            "prefect.flow_run_name": origin.get("prefect_flow_run_name", "")}  # fmt: skip


# A training holds a slot of this global concurrency limit when the team has created one
# (`prefect gcl create lmforge-training --limit 1`): two trainings never share a GPU. Only
# trainings take a slot: a cached stage never waits for one.
TRAINING_SLOTS = "lmforge-training"


@contextmanager
def training_slot():
    """Hold a TRAINING_SLOTS slot while training, if that limit exists."""
    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(TRAINING_SLOTS)
    except ObjectNotFound:
        yield
        return
    with concurrency(TRAINING_SLOTS, occupy=1):
        yield


def with_training_timeout(stage_task: Task, hours: float | None) -> Task:
    """A training task that fails after `schedules.training_timeout_h` hours, when set. No limit by
    default: a training's length follows the model and token budget (minutes for `tiny`, days
    for `gpt2-124m` on a CPU), and a timed-out training resumes from its last checkpoint when run
    again. The limit takes effect between training steps (the task runs in a worker thread)."""
    return stage_task.with_options(timeout_seconds=hours * 3600) if hours else stage_task


def workspace_for(workspace: str, stage: str, force: bool) -> Workspace:
    """The workspace a stage task builds in: its manifests name the Prefect flow run that made them."""
    return Workspace(workspace, rebuild=[stage] if force else [], origin=prefect_origin())


def prefect_origin() -> dict[str, str]:
    """The flow run (and deployment, when scheduled or triggered from the UI) running this task,
    read from the run's context: `prefect.runtime` would ask the API for each field."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:  # a task run away from its flow's thread
        origin = {"prefect_flow_run_id": flow_run.id, "prefect_flow_run_name": flow_run.name,
                  "prefect_flow": flow_run.flow_name, "prefect_deployment": deployment.name}  # fmt: skip
    else:
        run = ctx.flow_run
        origin = {"prefect_flow_run_id": run.id, "prefect_flow_run_name": run.name, "prefect_flow": ctx.flow.name}
        if run.deployment_id is not None:
            origin["prefect_deployment"] = deployment.name
    return {k: str(v) for k, v in origin.items() if v}


# ----------------------------------------------------------------------------- fan-out


@task(name="shard", cache_policy=NO_CACHE, persist_result=False)
def run_shard(fn: Callable[[T], R], item: T) -> R:
    return fn(item)


def prefect_map(stage: str) -> Callable[[Callable[[T], R], Sequence[T], Progress], list[R]]:
    """A `MapShards` that runs each shard as its own Prefect task run on the flow's task runner
    (threads by default; processes, Dask or Ray when configured), results in the items' order."""

    def map_shards(fn: Callable[[T], R], items: Sequence[T], progress: Progress = NullProgress()) -> list[R]:
        if not items:
            return []
        futures = [
            run_shard.with_options(task_run_name=f"{stage}-shard-{i:05d}-{fn.__name__}").submit(fn, item)
            for i, item in enumerate(items)
        ]
        for f in as_completed(futures):
            f.result()  # raises the first shard failure at once instead of after all shards
            progress.advance()
        return [f.result() for f in futures]

    return map_shards


# ----------------------------------------------------------------------------- progress


# A stage gets a progress artifact in the Prefect UI once it has run this long, updated at most
# this often: each update is an API call and a database write on a server that may share the
# machine's cores with the training (once a second was 3,600 writes per hour of training).
PROGRESS_ARTIFACT_AFTER_S = 2.0
PROGRESS_ARTIFACT_EVERY_S = 5.0


class StageProgress:
    """`lm_core.progress.Progress` shown twice: a bar in the terminal and, for a stage that runs
    longer than PROGRESS_ARTIFACT_AFTER_S, a progress artifact in the Prefect UI (updated at most
    every PROGRESS_ARTIFACT_EVERY_S; calls may come from several threads). The bar shows only on a
    terminal, and goes once the stage ends: its one line (`report_stage`) stays. Piped into a file,
    a bar would be its last frame only, which that line says better."""

    def __init__(self, stage: str, inputs: dict[str, str] | None = None):
        self.stage = stage
        # a stage run on the chat model (its inputs name a finetune artifact: evaluate, register)
        # keeps its own progress, apart from the same stage's run on the base model
        self._key = f"{stage}-progress" + ("-chat" if model_label(inputs or {}) == "chat" else "")
        self._lock = threading.Lock()
        self._bar = RichProgress(
            TextColumn(f"[bold]{stage}[/] {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            transient=True,
            disable=not get_console().is_terminal,
        )
        self._bar_task = None
        self._artifact_id = None
        self._done = 0
        self._total: int | None = None
        self._unit = ""
        self._started: float | None = None
        self._last_push = 0.0

    def __enter__(self) -> StageProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._push(final=True)
        self._bar.stop()

    def start(self, total: int | None, unit: str) -> None:
        with self._lock:
            self._done, self._total, self._unit = 0, total, unit
            if self._bar_task is not None:
                self._bar.update(self._bar_task, visible=True)
            self._bar_task = self._bar.add_task(unit, total=total, status="")
            if self._started is None:
                self._started = time.monotonic()
        self._push(final=False)

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            if self._bar_task is not None:
                self._bar.update(self._bar_task, advance=n)
        self._push(final=False)

    def describe(self, text: str) -> None:
        with self._lock:
            if self._bar_task is not None:
                self._bar.update(self._bar_task, status=text)

    def _push(self, final: bool) -> None:
        """Update the progress artifact, at most every PROGRESS_ARTIFACT_EVERY_S. A stage that ends within
        PROGRESS_ARTIFACT_AFTER_S never gets one: its stats table says it is done, and the API
        calls would cost a short stage more than they show."""
        now = time.monotonic()
        with self._lock:
            if self._artifact_id is None:
                if final or self._started is None or now - self._started < PROGRESS_ARTIFACT_AFTER_S:
                    return
            elif not final and now - self._last_push < PROGRESS_ARTIFACT_EVERY_S:
                return
            self._last_push = now
            pct = 100.0 if final or not self._total else min(100.0, 100.0 * self._done / self._total)
            create = self._artifact_id is None
        try:
            if create:
                self._artifact_id = create_progress_artifact(
                    pct, key=self._key, description=f"{self.stage}: {self._unit}"
                )
            else:
                update_progress_artifact(self._artifact_id, pct)
        except Exception:  # the UI is a convenience: never fail a stage over it
            pass


# ----------------------------------------------------------------------------- the stage's line

# A stage's key figures, from its stats: (format, the stats it needs), the first that fits.
KEY_FIGURES: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "crawl": [("{pages_fetched:,} pages fetched, {rows:,} documents", ("pages_fetched", "rows"))],
    "clean": [("{kept:,} of {documents_in:,} documents kept", ("kept", "documents_in"))],
    "tokenize": [("{tokens:,} tokens, vocabulary {vocab_size:,}", ("tokens", "vocab_size"))],
    "chunk": [("{train[blocks]:,} train, {val[blocks]:,} validation blocks of {seq_len}", ("train", "val", "seq_len"))],
    "stats": [("{vocab_used:,} of {vocab_size:,} token ids used", ("vocab_used", "vocab_size"))],
    "pretrain": [
        ("{steps} steps, val loss {val_loss:.3f}, {tokens_per_s:,.0f} tokens/s", ("steps", "val_loss", "tokens_per_s"))
    ],
    "finetune": [
        ("{method}, {steps} steps, held-out {initial_heldout_loss:.3f} -> {heldout_loss:.3f}",
         ("method", "steps", "initial_heldout_loss", "heldout_loss"))
    ],
    "evaluate": [("val perplexity {val_ppl:.4g}", ("val_ppl",)), ("{rows:,} samples", ("rows",))],
    "register": [("{model_uri} ({decision})", ("model_uri", "decision"))],
}  # fmt: skip


def key_figures(ref: ArtifactRef) -> str:
    for fmt, needs in KEY_FIGURES.get(ref.stage, []):
        if all(ref.stats.get(k) is not None for k in needs):
            try:
                return fmt.format(**ref.stats)
            except (KeyError, TypeError, ValueError):
                continue
    rows = ref.stats.get("rows")
    return f"{rows:,} rows" if isinstance(rows, int) else ""


def report_stage(ref: ArtifactRef, started: float) -> None:
    """The stage's one line in the terminal: built here or cached, its key figures, its time (since
    `started`, a time.monotonic()), e.g. `pretrain  3fe1c2de  built   30 steps, ...  5.4 s`; also in
    the flow run's log, for the UI."""
    seconds = time.monotonic() - started
    built = _built_here(ref)
    line = f"{ref.stage:<9} {ref.fingerprint[:8]}  {'built ' if built else 'cached'}  {key_figures(ref)}"
    line = f"{line}  ({seconds:.1f} s)" if built else line
    get_console().print(line, markup=False, highlight=False, soft_wrap=True)
    try:
        get_run_logger().info(f"{ref.stage} {ref.fingerprint}: {ref.path}")
    except Exception:  # no run context: the terminal line is enough
        pass


def _built_here(ref: ArtifactRef) -> bool:
    """Whether this flow run built the artifact (its manifest names the run), not found it
    published: cached by Prefect, or built by a concurrent run while this one waited for its lock."""
    try:
        made_by = ref.manifest().get("origin", {}).get("prefect_flow_run_id")
    except (OSError, ValueError):
        return True
    return made_by is None or made_by == prefect_origin().get("prefect_flow_run_id")


# ----------------------------------------------------------------------------- UI artifacts


def _flatten(prefix: str, value: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append({"statistic": prefix, "value": value})


def publish_stats(ref: ArtifactRef, breakdowns: Sequence[str] = ()) -> None:
    """A keyed Prefect table artifact with the stage's statistics, plus one table per named
    breakdown (e.g. documents per rejection reason)."""
    rows: list[dict[str, Any]] = [{"statistic": "fingerprint", "value": ref.fingerprint}]
    for k, v in ref.stats.items():
        if k not in breakdowns:
            _flatten(k, v, rows)
    send_ui_artifact(
        create_table_artifact,
        readable_table(rows),
        key=f"{ref.stage}-stats",
        description=f"{ref.stage} artifact `{ref.fingerprint}` at {ref.path}",
    )
    for name in breakdowns:
        counts = ref.stats.get(name) or {}
        table = [{"key": k, "count": v} for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
        key = f"{ref.stage}-{name}".replace("_", "-").lower()
        send_ui_artifact(
            create_table_artifact,
            readable_table(table or [{"key": "(none)", "count": 0}]),
            key=key,
            description=f"{ref.stage}: {name}",
        )
