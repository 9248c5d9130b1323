"""Every stage, declared once, in lifecycle order: the one table the workspace, the Prefect tasks,
the flows, the `lmforge stage` command, the deployments and the schedules are derived from.

A stage's functions are named by "module:function" and imported on first use (`lm_core.lazy`), so
that reading this table (`lmforge --help`, a cached run) imports neither torch nor trafilatura. They
take one shape, the whole `Config` and the input artifacts by name:

    key(cfg, inputs, ws) -> StageKey                       the one fingerprint computation of a run
    run(cfg, inputs, ws, key, StageRun) -> ArtifactRef     builds `<stage>/<key.fingerprint>` (or finds it)
    ui(cfg, ref) -> list[UiArtifact]                       what the stage shows besides its stats table

The whole Config, not a section: a stage reads what decides its output wherever it lives (chunk:
the evaluation sets; pretrain: the model, the seed; register: the run's name), and its `key`
says which of it counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lm_core.lazy import load
from lm_core.progress import MapShards, NullProgress, Progress, serial_map
from lm_core.workspace import ArtifactError, ArtifactRef, StageKey, Workspace

# `cfg` below is a lm_core.config.Config, which derives its schedules from this module: not imported.
Config = Any
Inputs = Mapping[str, ArtifactRef]


@dataclass(frozen=True)
class Stage:
    name: str
    description: str  # one line: the CLI's help, the flow's and the deployment's description
    key: str  # "module:function" computing its StageKey
    run: str  # "module:function" building its artifact
    section: str | None = None  # the Config section that configures it, if any
    # The artifacts it reads. The first is named by the user (`--input`, the flow's parameter) or
    # by the recipe; the others are found upstream of the first (an evaluation's chunk is the one
    # its model was trained on).
    inputs: tuple[str, ...] = ()
    input_param: str = ""  # the flow parameter naming the first input; default `<input>_artifact`
    input_option: str = "input"  # `lmforge stage NAME --<option>`; any stage also takes --input
    input_default: str | None = "latest"
    find_input: str = ""  # "module:function" (cfg, spec, ws) -> ArtifactRef; default: ws.resolve
    flow: str = ""  # the flow that runs it when scheduled: "data" (the data half), or its own name
    stats_table: bool = True  # a table of its stats in the UI
    breakdowns: tuple[str, ...] = ()  # stats shown as tables of their own (e.g. documents per reason)
    ui: str = ""  # "module:function" for what it shows besides
    trains: bool = False  # holds a training slot, and schedules.training_timeout_h applies
    retries: int = 0  # a stage that dies as a whole with the network is tried again
    refreshable: bool = False  # reads the web: `refresh` fetches a new snapshot, its key takes its label

    def __post_init__(self) -> None:
        if self.inputs and not self.input_param:
            object.__setattr__(self, "input_param", f"{self.inputs[0]}_artifact")
        if not self.flow:
            object.__setattr__(self, "flow", self.name)

    def function(self, which: Literal["key", "run", "ui", "find_input"]) -> Callable[..., Any]:
        return load(getattr(self, which))


@dataclass(frozen=True)
class StageRun:
    """What the orchestrator lends a stage's run: a progress display, a way to fan shards out,
    and the tags naming its run (for MLflow)."""

    progress: Progress = field(default_factory=NullProgress)
    map_shards: MapShards = serial_map
    run_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class UiArtifact:
    """Something a stage shows in the orchestrator's UI, as plain data: a table (`data`: rows),
    markdown (`data`: text) or a link (`data`: a URL, `link_text`)."""

    kind: Literal["table", "markdown", "link"]
    key: str
    data: Any
    description: str | None = None
    link_text: str | None = None


# fmt: off
STAGES: tuple[Stage, ...] = (
    Stage("crawl", "sources -> raw document shards (+ every refused fetch)",
          key="lm_core.crawl.stage:crawl_key", run="lm_core.crawl.stage:crawl_stage", section="crawl",
          flow="data", breakdowns=("documents_by_source", "failures_by_reason"), retries=3, refreshable=True),
    Stage("clean", "raw documents -> main text, filtered, scrubbed of personal data, deduplicated",
          key="lm_core.clean.fingerprint:clean_key", run="lm_core.clean.stage:clean_stage", section="clean",
          inputs=("crawl",), flow="data", breakdowns=("rejected_by_reason", "pii_replacements")),
    Stage("tokenize", "clean documents -> a BPE tokenizer and token shards", section="tokenize",
          key="lm_core.tokenize.stage:tokenize_key", run="lm_core.tokenize.stage:tokenize_stage",
          inputs=("clean",), flow="data"),
    Stage("chunk", "token documents -> train/validation blocks, training cut of what evaluation sets hold",
          key="lm_core.chunk.stage:chunk_key", run="lm_core.chunk.stage:chunk_stage", section="chunk",
          inputs=("tokenize",), flow="data"),
    Stage("stats", "train/validation blocks -> corpus statistics: tokens per split, document lengths, top tokens",
          key="lm_core.stats:stats_key", run="lm_core.stats:stats_stage", ui="lm_core.stats:stats_ui",
          inputs=("chunk", "tokenize"), flow="data", breakdowns=("top_tokens",)),
    Stage("pretrain", "train on the chunk artifact `data` names (latest, or a fingerprint prefix), tracked in MLflow",
          key="lm_core.train.fingerprint:pretrain_key", run="lm_core.train.stage:pretrain_stage",
          ui="lm_core.train.stage:pretrain_ui", section="pretrain", inputs=("chunk",),
          input_param="data", input_option="data", trains=True),
    Stage("finetune", "fine-tune the model `base` names (default finetune.base: a fingerprint, checkpoint "
          "folder or models:/ URI) into a chat model",
          key="lm_core.finetune.stage:finetune_key", run="lm_core.finetune.stage:finetune_stage",
          ui="lm_core.finetune.stage:finetune_ui", section="finetune", inputs=("base",), input_param="base",
          input_option="model", input_default=None, find_input="lm_core.finetune.stage:find_base",
          trains=True),
    Stage("evaluate", "score the model `model` names (latest, a fingerprint, models:/<name>@<alias>) on the "
          "chunk artifact it was trained on: perplexity, bits per byte, BLEU, chrF",
          key="lm_core.evaluate.fingerprint:evaluate_key", run="lm_core.evaluate.stage:evaluate_stage",
          ui="lm_core.evaluate.stage:evaluate_ui", stats_table=False, section="evaluate",
          inputs=("model", "chunk"), input_param="model", input_option="model",
          find_input="lm_core.model_spec:find_model"),
    Stage("register", "register the model the evaluate artifact `evaluation` (latest, or a fingerprint) "
          "scored in MLflow: champion when it passes the gate, else challenger",
          key="lm_core.registry.fingerprint:register_key", run="lm_core.registry.stage:register_stage",
          ui="lm_core.registry.stage:register_ui", stats_table=False, section="registry",
          inputs=("evaluate",), input_param="evaluation"),
)
# fmt: on
STAGE = {s.name: s for s in STAGES}
STAGE_NAMES = tuple(STAGE)

# The flows a team schedules: the data half, each stage that runs alone, the whole lifecycle;
# with the cron of those that run unattended by default (the others run on demand).
SCHEDULED_FLOWS = (*dict.fromkeys(s.flow for s in STAGES), "lifecycle")
DEFAULT_CRONS = {"data": "0 2 * * *", "lifecycle": "0 3 * * 0"}


def stages_in(flow: str) -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.flow == flow)


def resolve_input(stage: Stage, cfg: Config, spec: str | None, ws: Workspace) -> ArtifactRef:
    """The artifact a user's `spec` (latest, a fingerprint prefix, ...) names as the stage's first input."""
    if stage.find_input:
        return stage.function("find_input")(cfg, spec, ws)
    return ws.resolve(stage.inputs[0], spec or "latest")


def complete_inputs(stage: Stage, given: Inputs, ws: Workspace) -> dict[str, ArtifactRef]:
    """`given` and the stage's other inputs, found upstream of its first."""
    inputs = dict(given)
    missing = [name for name in stage.inputs if name not in inputs]
    if missing:
        first = inputs[stage.inputs[0]]
        upstream = ws.upstream(first.stage, first.fingerprint)
        for name in missing:
            if name not in upstream:
                raise ArtifactError(f"{stage.name}: no {name} artifact upstream of {first.stage} {first.fingerprint}")
            inputs[name] = ws.ref(name, upstream[name])
    return inputs


def stage_key(stage: Stage, cfg: Config, inputs: Inputs, ws: Workspace, snapshot: str | None = None) -> StageKey:
    """What a run of `stage` on `inputs` builds. `snapshot`: a refreshable stage's label (None: its newest)."""
    key_of = stage.function("key")
    return key_of(cfg, inputs, ws, snapshot) if stage.refreshable else key_of(cfg, inputs, ws)


def build(stage: Stage, cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return stage.function("run")(cfg, inputs, ws, key, run)
