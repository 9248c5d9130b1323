"""The data half of the lifecycle: crawl -> clean -> tokenize -> chunk.

`data_flow` runs the four stages in order; each `*_flow` below re-runs one stage alone on
artifacts already in the workspace (`latest`, or a fingerprint). Stages whose inputs and config
are unchanged are cache hits: Prefect shows them as Cached and nothing is recomputed.

The sources are crawled once per config; `refresh` fetches them again as a new crawl snapshot
(the nightly `data` deployment does). The stages after it rebuild only when the pages changed:
clean takes the crawl's content digest, not its fingerprint.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from flows.common import STAGE_FLOW, ConfigParameter
from flows.runners import task_runner
from lm_core.config import Config
from lm_core.workspace import ArtifactRef, Workspace
from tasks.chunk import chunk
from tasks.clean import clean
from tasks.crawl import crawl
from tasks.tokenize import tokenize


class DataArtifacts(BaseModel):
    crawl: ArtifactRef
    clean: ArtifactRef
    tokenize: ArtifactRef
    chunk: ArtifactRef


@flow(name="data", **STAGE_FLOW)
def data_flow(config: ConfigParameter, force: bool = False, refresh: bool = False) -> DataArtifacts:
    ws = str(config.workspace)
    raw = crawl(config.crawl, ws, force, refresh)
    cleaned = clean(config.clean, raw, ws, force)
    tokens = tokenize(config.tokenize, cleaned, ws, force)
    blocks = chunk(config.chunk, tokens, ws, force, config.evaluate)  # decontaminated against its sets
    print(f"train/val blocks ready: {blocks.path}")
    return DataArtifacts(crawl=raw, clean=cleaned, tokenize=tokens, chunk=blocks)


# ----------------------------------------------------------------------------- single stages


@flow(name="crawl", **STAGE_FLOW)
def crawl_flow(config: ConfigParameter, force: bool = False, refresh: bool = False) -> ArtifactRef:
    return crawl(config.crawl, str(config.workspace), force, refresh)


@flow(name="clean", **STAGE_FLOW)
def clean_flow(config: ConfigParameter, crawl_artifact: str = "latest", force: bool = False) -> ArtifactRef:
    ws = str(config.workspace)
    return clean(config.clean, Workspace(ws).resolve("crawl", crawl_artifact), ws, force)


@flow(name="tokenize", **STAGE_FLOW)
def tokenize_flow(config: ConfigParameter, clean_artifact: str = "latest", force: bool = False) -> ArtifactRef:
    ws = str(config.workspace)
    return tokenize(config.tokenize, Workspace(ws).resolve("clean", clean_artifact), ws, force)


@flow(name="chunk", **STAGE_FLOW)
def chunk_flow(config: ConfigParameter, tokenize_artifact: str = "latest", force: bool = False) -> ArtifactRef:
    ws = str(config.workspace)
    return chunk(config.chunk, Workspace(ws).resolve("tokenize", tokenize_artifact), ws, force, config.evaluate)


def with_runner(a_flow, config: Config):
    """The flow with the task runner the config asks for: per-shard tasks on threads, processes,
    Dask or Ray (see flows/runners.py)."""
    return a_flow.with_options(task_runner=task_runner(config.runner))
