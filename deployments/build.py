"""A Prefect deployment per flow a team schedules (`lm_core.stages.SCHEDULED_FLOWS`), with its
parameters and cron schedule (`schedules.<flow>`) from the config:

    data       the data stages (crawl -> ... -> stats)          nightly by default, with `refresh`:
               the sources are crawled again as a new snapshot; clean and after rebuild only
               when the pages changed
    <stage>    each stage that runs alone (pretrain, finetune, evaluate, register), on the
               latest (or a given) input                         on demand by default
    lifecycle  all of the above (data as a subflow)             weekly by default, Sunday 03:00
    review     a review round: the latest model against its      on demand by default
               registered champion (flows/review.py)

Every deployment is named after the config (`data/lmforge-small`) and carries the whole
resolved config as its `config` parameter (with an absolute workspace, so a run finds the same
artifacts whatever directory the runner started in), and the artifact parameters at `latest`:
from the Prefect UI, "Run > Custom run" re-runs one stage on a given fingerprint.

Two ways to run them:
- `serve(cfg)` (`lmforge serve`): one long-lived process polls the server and runs the flows as
  subprocesses; no work pool. The flows run with the config's task runner.
- `deploy(cfg, pool)` (`lmforge deploy`): registered to a `process` work pool; a
  `prefect worker start --pool <pool>` in this repository's virtual environment imports the
  flows by module path (`flows.data.data_flow`) and runs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from prefect import deploy as prefect_deploy
from prefect import serve as prefect_serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from flows.data import with_runner
from lm_core.config import Config
from lm_core.stages import SCHEDULED_FLOWS

# name -> (module, flow function): the two recipes, the flow of each stage that runs alone, and
# `review`, which makes a review round (no stage: not in SCHEDULED_FLOWS).
RECIPES = {
    "data": ("flows.data", "data_flow"),
    "lifecycle": ("flows.lifecycle", "lifecycle_flow"),
    "review": ("flows.review", "review_flow"),
}
FLOWS: dict[str, tuple[str, str]] = {
    name: RECIPES.get(name, ("flows.stages", f"{name}_flow")) for name in (*SCHEDULED_FLOWS, "review")
}

DEFAULT_POOL = "lmforge"


def config_parameter(cfg: Config) -> dict[str, Any]:
    """The config as a deployment parameter: plain JSON, workspace made absolute."""
    tree = cfg.model_dump(mode="json")
    tree["workspace"] = str(cfg.workspace.resolve())
    return tree


def build_deployments(cfg: Config, work_pool: str | None = None) -> list:
    """One `RunnerDeployment` per flow in FLOWS; nothing is sent to a server."""
    config = config_parameter(cfg)
    out = []
    for name, (module, function) in FLOWS.items():
        parameters = {"config": config}
        if name == "data":
            parameters["refresh"] = True  # the nightly refresh fetches the sources again
        mod = import_module(module)
        flow = with_runner(getattr(mod, function), cfg)
        cron = cfg.schedules.cron(name)
        out.append(
            flow.to_deployment(
                name=cfg.name,
                schedules=[Cron(cron, timezone=cfg.schedules.timezone)] if cron else None,
                parameters=parameters,
                description=(flow.description or mod.__doc__ or "").strip() or None,
                tags=["lmforge", name],
                entrypoint_type=EntrypointType.MODULE_PATH,  # importable wherever lmforge is installed
                work_pool_name=work_pool,
            )
        )
    return out


def serve(cfg: Config) -> None:
    """Serve every deployment from this process until interrupted (schedules paused on exit)."""
    prefect_serve(*build_deployments(cfg))


def ensure_process_pool(name: str) -> bool:
    """Create the `process` work pool `name` unless it exists; True when created."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return True
    if pool.type != "process":
        raise ValueError(f"work pool {name!r} exists with type {pool.type!r}; lmforge deploys to a 'process' pool")
    return False


def deploy(cfg: Config, pool: str = DEFAULT_POOL) -> list:
    """Register every deployment to the `process` work pool `pool` (created if missing); the
    deployment ids, in FLOWS order."""
    ensure_process_pool(pool)
    return list(prefect_deploy(*build_deployments(cfg, work_pool=pool), work_pool_name=pool, ignore_warnings=True))
