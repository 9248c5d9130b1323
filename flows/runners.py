"""The Prefect task runner that per-shard tasks run on, from `config.runner`.

`threads` and `processes` are Prefect's own. `dask` and `ray` come from prefect-dask and
prefect-ray, imported only when asked for. Without `runner.address` each starts a cluster on this
machine for the flow's duration (`max_workers` single-threaded workers, bound to 127.0.0.1, no
dashboard); with it, shards go to the team's running cluster, whose workers must have lmforge
installed and see the workspace at the same path.

Workers report their task runs to the run's Prefect API (`PREFECT_API_URL`: the server `lmforge`
starts for each command, or a team's server). A flow called from Python with Prefect's in-process
ephemeral API instead makes each worker process start an API of its own on the same database: it
works, slowly.

The runner never changes what a stage produces, only where its shards run: `runner` fields are
PERFORMANCE_ONLY, and the artifacts are the same bytes on every runner.
"""

from __future__ import annotations

import logging
import os
from importlib import import_module

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from lm_core.config import RunnerConfig


class MissingRunnerError(ImportError):
    pass


def task_runner(runner: RunnerConfig) -> TaskRunner:
    workers = runner.max_workers or os.cpu_count() or 1
    if runner.kind == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if runner.kind == "dask":
        return _dask(runner, workers)
    if runner.kind == "ray":
        return _ray(runner, workers)
    return ThreadPoolTaskRunner(max_workers=workers)


def _runner_class(kind: str, package: str, name: str) -> type[TaskRunner]:
    """The task runner class of an optional Prefect integration, or an error saying what to install."""
    try:
        return getattr(import_module(package.replace("-", "_")), name)
    except ImportError as e:
        raise MissingRunnerError(f"runner.kind={kind} needs {package}: pip install {package} ({e})") from None


def _dask(runner: RunnerConfig, workers: int) -> TaskRunner:
    DaskTaskRunner = _runner_class("dask", "prefect-dask", "DaskTaskRunner")  # noqa: N806
    if runner.address:
        return DaskTaskRunner(address=runner.address)
    # one thread per worker process: a shard's work is pure Python (HTML extraction) or already
    # multi-threaded (tokenizers), so processes, not threads, are the unit of parallelism
    cluster = dict(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    # the in-process scheduler logs every worker's start and stop at INFO: noise in a run's output
    logging.getLogger("distributed").setLevel(logging.WARNING)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster)


def _ray(runner: RunnerConfig, workers: int) -> TaskRunner:
    RayTaskRunner = _runner_class("ray", "prefect-ray", "RayTaskRunner")  # noqa: N806
    if runner.address:
        return RayTaskRunner(address=runner.address)
    local = dict(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1")
    return RayTaskRunner(init_kwargs=local)
