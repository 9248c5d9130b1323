"""`lmforge`: the one command-line entry point.

    lmforge run      [--config F] [--set k=v ...]     the lifecycle: data, pretrain, evaluate, register
    lmforge data     [--config F] [--set k=v ...]     crawl -> clean -> tokenize -> chunk
    lmforge stage NAME [--input latest|FP] [--force]  one stage alone, on earlier artifacts
                 (pretrain --data FP; evaluate/finetune --model FP|models:/name@alias)
    lmforge export   --model FP|latest --out DIR      a Hugging Face folder (LlamaForCausalLM)
    lmforge generate --model SPEC "prompt" ...        continue prompts (SPEC: models:/name@alias, folder, FP)
    lmforge chat     --model SPEC                     talk to a model in the terminal
    lmforge ls       [--stage S]                      artifacts in the workspace
    lmforge config   [--config F] [--set k=v ...]     print the resolved configuration
    lmforge server   [--postgres URL] [--mlflow-backend URL]  Prefect and MLflow servers on 127.0.0.1
    lmforge serve    [--config F]                     serve a deployment per flow, with the config's schedules
    lmforge deploy   [--config F] [--pool NAME]       register them to a process work pool

The configuration is loaded and validated before anything else happens, and the environment
(PREFECT_HOME inside the workspace, telemetry off) is set before Prefect is first imported.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from lm_core.config import Config, ConfigError, default_tracking_uri, load_config
from lm_core.lazy import load
from lm_core.secrets import mask_url, mask_urls
from lm_core.shards import CorruptShardError
from lm_core.stages import STAGE, STAGE_NAMES, STAGES, Stage, stages_in
from lm_core.workspace import ArtifactError, Workspace
from lmforge.embedded import EmbeddedServer
from lmforge.process import collect_less_often, exit_now, imports_without_collection
from lmforge.server import ServerError, Servers, check_tracking_server, crash_unresponsive_runs

# MLflow's download progress bars would interleave with our output (and generated text).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="lmforge: from URLs to a trained GPT-style model.")
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a value: section.field=value")]
ForceOpt = Annotated[bool, typer.Option("--force", help="recompute even where the artifact is cached")]
RefreshOpt = Annotated[
    bool,
    typer.Option("--refresh", help="crawl the sources again (a new snapshot); later stages rebuild if pages changed"),
]


def _load(config: Path | None, overrides: list[str] | None) -> Config:
    try:
        return load_config(config, overrides or [])
    except ConfigError as e:
        _fail(e, code=2)


def prepare_environment(cfg: Config) -> None:
    """Keep Prefect's database and results inside the workspace, and telemetry off, before
    Prefect is imported: runs made here show up later in `prefect server` pointed at it."""
    ws = Path(cfg.workspace).resolve()
    ws.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(ws / ".prefect"))
    for k, v in {
        "DO_NOT_TRACK": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "TOKENIZERS_PARALLELISM": "true",
    }.items():
        os.environ.setdefault(k, v)


def _orchestrate(cfg: Config, flow: str, tracks: bool = True, **params):
    """Run the flow `flow` ("module:function", imported here: Prefect) on `cfg` against Prefect: a
    configured server (PREFECT_API_URL), or the embedded one started here, which boots while the
    flows import. A flow that `tracks` (logs to MLflow) first checks that its tracking server answers."""
    if tracks:
        try:
            check_tracking_server(cfg.tracking_uri)
        except ServerError as e:
            _fail(e)
    prepare_environment(cfg)
    server = EmbeddedServer(Path(os.environ["PREFECT_HOME"]))
    try:
        with imports_without_collection():
            from flows.data import with_runner  # Prefect: only once the environment is set

            a_flow = with_runner(load(flow), cfg)
            server.wait()
        with server.settings():  # on leaving, the server has recorded every run it was sent
            return a_flow(config=cfg, **params)
    except _user_errors() as e:
        _fail(e)
    finally:
        server.stop(wait=False)  # it finishes shutting down on its own while this command exits


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input (a config, an artifact, a model spec, a checkpoint), shown without
    a traceback."""
    from lm_core.model_folder import WeightsError  # torch: not for every command; CheckpointError is one
    from lm_core.model_spec import ModelArtifactNotFound

    return (ArtifactError, CorruptShardError, WeightsError, ModelArtifactNotFound, ValueError)


def _fail(problem: Exception | str, code: int = 1) -> None:
    """Print `error: <problem>` and exit with `code` (2: a usage error, before any work)."""
    # unwrapped: names and URIs stay copyable; a URL's password never shown
    err.print(f"[red]error:[/] {mask_urls(str(problem))}", soft_wrap=True)
    raise typer.Exit(code) from None


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False, refresh: RefreshOpt = False) -> None:
    """The lifecycle: crawl -> clean -> tokenize -> chunk -> stats -> pretrain -> evaluate -> register."""
    cfg = _load(config, set_)
    refs = _orchestrate(cfg, "flows.lifecycle:lifecycle_flow", force=force, refresh=refresh)
    data = [getattr(refs.data, s.name) for s in stages_in("data")]
    chat = [r for r in (refs.finetune, refs.chat_evaluate, refs.chat_registration) if r is not None]
    _print_artifacts([*data, refs.pretrain, refs.evaluate, refs.registration, *chat], cfg)
    _print_model(refs.pretrain, refs.evaluate, refs.registration, cfg)
    if refs.chat_registration is not None:
        _print_chat_model(refs.finetune, refs.chat_evaluate, refs.chat_registration)


@app.command()
def data(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False, refresh: RefreshOpt = False) -> None:
    """crawl -> clean -> tokenize -> chunk -> stats, each stage cached by fingerprint."""
    cfg = _load(config, set_)
    refs = _orchestrate(cfg, "flows.data:data_flow", tracks=False, force=force, refresh=refresh)
    _print_artifacts([getattr(refs, s.name) for s in stages_in("data")], cfg)


# The named options some stages take for their input, besides --input (`--model`: evaluate, finetune).
NAMED_INPUTS: dict[str, tuple[str, ...]] = {}
for _stage in STAGES:
    if _stage.inputs and _stage.input_option != "input":
        NAMED_INPUTS[_stage.input_option] = (*NAMED_INPUTS.get(_stage.input_option, ()), _stage.name)


def stage(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGE_NAMES)}")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    input_: Annotated[
        str | None, typer.Option("--input", help="the input artifact: latest (default) or a fingerprint (prefix)")
    ] = None,
    force: ForceOpt = False,
    refresh: RefreshOpt = False,
    restart: Annotated[
        bool, typer.Option("--restart/--resume", help="discard an interrupted build instead of resuming it")
    ] = False,
    nproc: Annotated[int | None, typer.Option("--nproc", help="pretrain: processes per node (torchrun)")] = None,
    nnodes: Annotated[int | None, typer.Option("--nnodes", help="pretrain: nodes (torchrun)")] = None,
    **named: str | None,
) -> None:
    """Run one stage alone, on an artifact of an earlier run (its input: latest by default)."""
    if name not in STAGE:
        _fail(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}", code=2)
    chosen = _stage_input(STAGE[name], input_=input_, **named)
    refreshable = [s.name for s in STAGES if s.refreshable]
    if refresh and name not in refreshable:
        _fail(f"--refresh re-crawls: it applies to the {' and '.join(refreshable)} stage, not {name!r}", code=2)
    set_ = list(set_ or [])
    if nproc is not None:
        set_.append(f"pretrain.distributed.nproc={nproc}")
    if nnodes is not None:
        set_.append(f"pretrain.distributed.nnodes={nnodes}")
    cfg = _load(config, set_)
    if restart and name == "pretrain" and cfg.pretrain.distributed.node_rank > 0:
        # the nodes share the workspace: only node 0, which owns the build, may discard it
        _fail("--restart discards node 0's training: run it on node 0 (node_rank 0)", code=2)
    if restart:
        _discard_partial(cfg, name)
    params = {"force": force, **({"refresh": True} if refresh else {})}
    if chosen is not None:
        params[STAGE[name].input_param] = chosen
    ref = _orchestrate(cfg, f"flows.stages:{name}_flow", tracks=STAGE[name].flow != "data", **params)
    _print_artifacts([ref], cfg)


# `--data`, `--model`, ...: an option per name in NAMED_INPUTS, from the declarations, in the
# signature typer reads.
stage.__signature__ = inspect.signature(stage).replace(
    parameters=[
        *(p for p in inspect.signature(stage, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD),
        *(
            inspect.Parameter(
                option,
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[
                    str | None, typer.Option(f"--{option}", help=f"{' and '.join(names)}: the input, as --input")
                ],
            )
            for option, names in NAMED_INPUTS.items()
        ),
    ]
)
app.command()(stage)


def _stage_input(stage: Stage, **given: str | None) -> str | None:
    """The one input option given to `lmforge stage NAME`; a named option on a stage it does
    not fit, or two at once, is a usage error."""
    named = {k: v for k, v in given.items() if v is not None}
    for option in named:
        stages = NAMED_INPUTS.get(option)
        if stages is not None and stage.name not in stages:
            _fail(f"--{option} is for {' and '.join(stages)}; {stage.name} takes --input", code=2)
    if len(named) > 1:
        _fail(f"give one of {', '.join('--' + k.rstrip('_') for k in named)}", code=2)
    if named and not stage.inputs:
        _fail(f"{stage.name} has no input artifact: it reads the configured sources", code=2)
    return next(iter(named.values()), None)


def _discard_partial(cfg: Config, stage: str) -> None:
    """Forget an interrupted build of this stage (a crawl's frontier, a training's checkpoints)."""
    folder = Path(cfg.workspace) / stage
    for partial in folder.glob(".partial-*") if folder.is_dir() else []:
        shutil.rmtree(partial, ignore_errors=True)
        console.print(f"discarded the interrupted build {partial.name}")


ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="models:/<name>@<alias> or /<version>, a model folder, or a fingerprint"),
]
MaxNewOpt = Annotated[int, typer.Option("--max-new-tokens", "-n", min=1)]
TemperatureOpt = Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0: greedy")]
TopKOpt = Annotated[int | None, typer.Option("--top-k", min=1)]
TopPOpt = Annotated[float | None, typer.Option("--top-p", min=0.0, max=1.0)]
SeedOpt = Annotated[int, typer.Option("--seed")]


def _load_model(model: str, cfg: Config):
    """A TextModel from a registry URI, a folder or a workspace fingerprint; errors named."""
    from lm_core.model_folder import ModelLoadError  # torch, MLflow: only the commands that load a model
    from lm_core.registry.resolve import ModelNotFound, load_text_model

    try:
        return load_text_model(model, workspace=cfg.workspace, tracking_uri=cfg.tracking_uri)
    except (ModelNotFound, ModelLoadError) as e:
        _fail(e)


@app.command()
def generate(
    prompts: Annotated[list[str], typer.Argument(help="one or more prompts, continued in one batch")],
    model: ModelOpt = "latest",
    max_new_tokens: MaxNewOpt = 64,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = None,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Continue prompts with a trained or registered model."""
    from lm_core.textgen import GenerationSettings  # torch: only the commands that run a model

    cfg = _load(config, set_)
    text_model = _load_model(model, cfg)
    settings = GenerationSettings(max_new_tokens, temperature, top_k, top_p, seed)
    for prompt, out in zip(prompts, text_model.generate(prompts, settings), strict=True):
        console.print(f"[bold]{prompt}[/]{out}", highlight=False)


@app.command()
def chat(
    model: ModelOpt = "latest",
    max_new_tokens: MaxNewOpt = 128,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Talk to a model in the terminal. A chat model (fine-tuned) answers through its chat
    template, with the whole conversation as history; a base model continues the transcript.
    The oldest turns drop out when the context is full. Ctrl-D or an empty line ends it."""
    from lm_core.textgen import GenerationSettings  # torch: only the commands that run a model
    from lm_core.tokenize.chat_template import Message

    cfg = _load(config, set_)
    text_model = _load_model(model, cfg)
    kind = "chat model" if text_model.is_chat else "base model: it continues the transcript"
    console.print(f"[dim]{text_model.source} ({kind}), {text_model.context}-token context. Ctrl-D to leave.[/]")
    history: list[Message] = []
    turn = 0
    while True:
        try:
            line = console.input("[bold green]you>[/] ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append(Message("user", line))
        settings = GenerationSettings(max_new_tokens, temperature, top_k, top_p, seed=turn)
        if text_model.is_chat:
            reply = text_model.reply([history], settings)[0].strip()
        else:
            transcript = "".join(f"{m.content}\n" for m in history)
            reply = text_model.generate([transcript], settings)[0].strip()
        console.print(f"[bold blue]model>[/] {reply}", highlight=False)
        history.append(Message("assistant", reply or "..."))
        turn += 1


@app.command("export")
def export(
    model: Annotated[str, typer.Option("--model", help="a pretrain fingerprint (prefix), latest, or a model folder")],
    out: Annotated[Path, typer.Option("--out", help="folder to write")],
    format_: Annotated[str, typer.Option("--format", help="hf: a transformers LlamaForCausalLM folder")] = "hf",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export a trained model (today: as a Hugging Face `LlamaForCausalLM` folder)."""
    if format_ != "hf":
        _fail(f"unknown export format {format_!r}; formats: hf", code=2)
    from lm_core.export import export_hf  # torch, transformers: export alone

    cfg = _load(config, set_)
    src = Path(model)
    try:
        if not src.is_dir():
            src = Workspace(cfg.workspace).resolve("pretrain", model).dir
        written = export_hf(src, out)
    except (ArtifactError, FileNotFoundError) as e:
        _fail(e)
    console.print(f"wrote {written}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(written)!r})")


@app.command("ls")
def list_artifacts(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    stage_: Annotated[str | None, typer.Option("--stage", help="only this stage")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per artifact, for scripts")] = False,
) -> None:
    """Artifacts in the workspace, newest first, with the Prefect flow run that made each."""
    cfg = _load(config, set_)
    found = Workspace(cfg.workspace).artifacts(stage_)
    if as_json:
        for a in found:
            m = a["manifest"]
            keep = ("created", "rows", "bytes", "inputs", "origin")
            print(json.dumps({"stage": a["stage"], "fingerprint": a["fingerprint"], "path": a["path"]} | {
                k: m[k] for k in keep if k in m}))  # fmt: skip
        return
    if not found:
        console.print(f"no artifacts in {Path(cfg.workspace).resolve()}")
        return
    table = Table(title=f"artifacts in {Path(cfg.workspace).resolve()}")
    for col in ("stage", "fingerprint", "created", "rows", "tokens", "size", "inputs", "made by"):
        table.add_column(col, justify="right" if col in ("rows", "tokens", "size") else "left")
    for a in found:
        m = a["manifest"]
        table.add_row(
            a["stage"],
            a["fingerprint"],
            _when(m.get("created")),
            _num(m.get("rows")),
            _num(_tokens(m.get("stats", {}))),
            _size(m.get("bytes")),
            " ".join(
                f"{k}:{v if k == 'snapshot' else v[:8]}" for k, v in m.get("inputs", {}).items() if isinstance(v, str)
            ),
            _made_by(m.get("origin", {})),
        )
    console.print(table)


def _made_by(origin: dict[str, str]) -> str:
    """The Prefect flow run that published an artifact: its name and flow (find it in the UI)."""
    if not origin.get("prefect_flow_run_name"):
        return "-"  # built by lm_core called directly
    return f"{origin['prefect_flow_run_name']} ({origin.get('prefect_flow', 'flow')})"


@app.command()
def gc(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would be removed")] = False,
) -> None:
    """Remove crawl snapshots nothing was built from: the copies nightly refreshes leave when the
    pages had not changed. Keeps the newest crawl of each config and every crawl an artifact names
    as its input. Refused while a build runs in the workspace."""
    from lm_core.crawl.stage import redundant_snapshots  # the crawler's httpx, lxml: 0.2 s of every command

    cfg = _load(config, set_)
    ws = Workspace(cfg.workspace)
    running = ws.building()
    if running:
        _fail(f"builds are running in {ws.root} ({', '.join(running)}): run gc when they have ended")
    doomed = redundant_snapshots(ws)
    for a in doomed:
        m = a["manifest"]
        if not dry_run:
            ws.remove("crawl", a["fingerprint"])
        label = m.get("inputs", {}).get("snapshot") or "first crawl"
        console.print(
            f"{'would remove' if dry_run else 'removed'} crawl {a['fingerprint']} ({label}, {_size(m.get('bytes'))})"
        )
    freed = _size(sum(a["manifest"].get("bytes", 0) for a in doomed))
    console.print(f"{len(doomed)} crawl snapshot(s), {freed} {'to free' if dry_run else 'freed'}", highlight=False)


@app.command("config")
def show_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved configuration (defaults, file and overrides) as YAML."""
    cfg = _load(config, set_)
    console.print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="", markup=False)


# ----------------------------------------------------------------------------- servers, schedules


@app.command()
def server(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    postgres: Annotated[
        str | None,
        typer.Option(
            "--postgres",
            envvar="LMFORGE_PREFECT_DATABASE_URL",
            help="PostgreSQL for Prefect: postgresql://user:password@host/db (default: SQLite in the workspace)",
        ),
    ] = None,
    mlflow_backend: Annotated[
        str | None,
        typer.Option(
            "--mlflow-backend",
            envvar="LMFORGE_MLFLOW_BACKEND_URI",
            help="MLflow's store, e.g. postgresql://... (default: tracking.tracking_uri, or the workspace's mlflow.db)",
        ),
    ] = None,
    prefect_port: Annotated[int, typer.Option("--prefect-port", min=1, max=65535)] = 4200,
    mlflow_port: Annotated[int, typer.Option("--mlflow-port", min=1, max=65535)] = 5000,
    unresponsive_after: Annotated[
        float | None,
        typer.Option(
            "--unresponsive-after",
            min=1,
            help="mark a run Crashed after this many seconds without a heartbeat (default: 3 heartbeats, 9 min)",
        ),
    ] = None,
) -> None:
    """Start a Prefect server and an MLflow tracking server on 127.0.0.1 (Ctrl-C stops both)."""
    cfg = _load(config, set_)
    prepare_environment(cfg)
    backend = mlflow_backend or _local_tracking_store(cfg)
    try:
        servers = Servers(
            workspace=cfg.workspace,
            prefect_home=Path(os.environ["PREFECT_HOME"]),
            mlflow_backend=backend or default_tracking_uri(cfg.workspace),
            prefect_port=prefect_port,
            mlflow_port=mlflow_port,
            postgres=postgres,
        )
    except ServerError as e:
        _fail(e)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # even when started in the background, where SIGINT is ignored
    stopped_by_user = False
    try:
        console.print(
            "starting the Prefect and MLflow servers (a fresh Prefect database takes a minute) ...", soft_wrap=True
        )
        servers.start()
        silent_s = crash_unresponsive_runs(f"{servers.prefect_url}/api", unresponsive_after)
        width = max(map(len, servers.describe()))
        for k, v in servers.describe().items():
            console.print(f"  {k:<{width}}  {v}", highlight=False, soft_wrap=True)
        _print_unresponsive_after(silent_s)
        console.print(
            "lmforge commands on this workspace now record their runs in this Prefect server (live in its UI);\n"
            "other clients, and MLflow through its server:\n"
            f"  export PREFECT_API_URL={servers.prefect_url}/api\n"
            f"  lmforge run --config <your config> --set tracking.tracking_uri={servers.mlflow_url}\n"
            "Ctrl-C stops both.",
            highlight=False,
            soft_wrap=True,
        )
        exited = servers.wait()
    except KeyboardInterrupt:
        stopped_by_user = True
    except ServerError as e:
        _fail(e)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        console.print("stopping the servers ...")
        servers.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if not stopped_by_user:
        _fail(f"the {exited} server stopped on its own; see its log in {servers.prefect_home}")
    console.print("stopped")


def _require_server(what: str) -> None:
    if not os.environ.get("PREFECT_API_URL"):
        _fail(
            f"{what} needs a running Prefect server: start one with `lmforge server`, then\n"
            "  export PREFECT_API_URL=http://127.0.0.1:4200/api",
            code=2,
        )


@app.command()
def serve(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Serve a deployment per flow (data, pretrain, finetune, evaluate, register, lifecycle), with the
    config's schedules, from this process until Ctrl-C. Needs PREFECT_API_URL (see `lmforge server`)."""
    cfg = _load(config, set_)
    _require_server("lmforge serve")
    prepare_environment(cfg)
    from deployments.build import serve as serve_deployments  # Prefect: once PREFECT_HOME is set

    try:
        serve_deployments(cfg)
    except KeyboardInterrupt:
        console.print("stopped serving; the deployments' schedules are paused until served again")


@app.command()
def deploy(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    pool: Annotated[str, typer.Option("--pool", help="a `process` work pool, created if missing")] = "lmforge",
) -> None:
    """Register a deployment per flow to a `process` work pool, for `prefect worker start --pool NAME`,
    and the automation that marks runs whose process died Crashed. Needs PREFECT_API_URL."""
    cfg = _load(config, set_)
    _require_server("lmforge deploy")
    prepare_environment(cfg)
    from deployments.build import FLOWS  # Prefect: once PREFECT_HOME is set
    from deployments.build import deploy as deploy_deployments

    try:
        deploy_deployments(cfg, pool)
        silent_s = crash_unresponsive_runs(os.environ["PREFECT_API_URL"])
    except (ValueError, ServerError) as e:
        _fail(e)
    for name in FLOWS:
        cron = cfg.schedules.cron(name)
        console.print(f"  {name}/{cfg.name}  " + (f"cron {cron} ({cfg.schedules.timezone})" if cron else "on demand"))
    console.print(f"run them with: prefect worker start --pool {pool}  (in this virtual environment)")
    _print_unresponsive_after(silent_s)


def _print_unresponsive_after(silent_s: float | None) -> None:
    """What the server's crash automation (lmforge.server.crash_unresponsive_runs) was set to."""
    if silent_s is not None:
        console.print(f"a run whose process is gone (no heartbeat for {silent_s:g} s) is marked Crashed")


# ----------------------------------------------------------------------------- output


def _tokens(stats: dict) -> int | None:
    if "tokens" in stats:
        return stats["tokens"]
    per_split = [v.get("tokens") for v in stats.values() if isinstance(v, dict) and "tokens" in v]
    return sum(per_split) if per_split else None


def _num(n) -> str:
    return "" if n is None else f"{n:,}"


def _size(n) -> str:
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _when(iso: str | None) -> str:
    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


def _print_artifacts(refs, cfg: Config) -> None:
    table = Table(title="artifacts")
    for col in ("stage", "fingerprint", "rows", "tokens", "path"):
        table.add_column(col)
    for r in refs:
        table.add_row(r.stage, r.fingerprint, _num(r.stats.get("rows")), _num(_tokens(r.stats)), r.path)
    console.print(table)
    console.print(
        f"list them any time with: lmforge ls --config <your config>  (workspace: {Path(cfg.workspace).resolve()})"
    )


def _print_model(model, evaluation, registration, cfg: Config) -> None:

    s, e, r = model.stats, evaluation.stats, registration.stats
    console.print(
        f"\n[bold]model[/] {model.fingerprint}: {s.get('params', 0) / 1e6:.1f}M parameters, {s.get('steps')} steps, "
        f"{s.get('tokens', 0):,} tokens"
    )
    _print_scores_and_registration(e, r, ("val_", "text.", "bleu.", "chrf."))
    samples = _samples(evaluation)
    if samples:
        first = samples[0]
        console.print(f"sample: [italic]{first['prompt']}[/]{first['generation']}", markup=True, highlight=False)
    ws = Path(cfg.workspace).resolve()
    name = r["name"]
    console.print(
        "\nnext:\n"
        f'  generate:    .venv/bin/lmforge generate --model models:/{name}@champion "The"\n'
        f"  serve:       .venv/bin/mlflow models serve -m models:/{name}@champion --env-manager local "
        f"(with MLFLOW_TRACKING_URI={cfg.tracking_uri})\n"
        f"  both UIs:    .venv/bin/lmforge server --set workspace={ws}{_backend_option(cfg)}   "
        "-> Prefect http://127.0.0.1:4200, MLflow http://127.0.0.1:5000\n"
        f"  export:      .venv/bin/lmforge export --model {model.fingerprint[:8]} --out hf-model"
    )


def _local_tracking_store(cfg: Config) -> str | None:
    """The tracking store the config names when it is a database `lmforge server` can serve
    (not a tracking server's http(s) URL); None when it names none."""
    uri = cfg.tracking.tracking_uri
    return uri if uri and not uri.startswith(("http:", "https:")) else None


def _backend_option(cfg: Config) -> str:
    """`lmforge server`'s option for a tracking store set in the config (a local database)."""
    uri = _local_tracking_store(cfg)
    return f" --mlflow-backend {mask_url(uri)}" if uri else ""


def _print_chat_model(model, evaluation, registration) -> None:

    s, e, r = model.stats, evaluation.stats, registration.stats
    console.print(
        f"\n[bold]chat model[/] {model.fingerprint} ({s.get('method')}, {s.get('steps')} steps on "
        f"{s.get('train_examples')} chats from {s.get('source')}): held-out loss "
        f"{s.get('initial_heldout_loss', float('nan')):.3f} -> {s.get('heldout_loss', float('nan')):.3f}",
        highlight=False,
    )
    _print_scores_and_registration(e, r, ("bleu.", "chrf.", "val_bpb"))
    console.print(f"  talk to it: .venv/bin/lmforge chat --model models:/{r['name']}@champion", highlight=False)
    chats = [x for x in _samples(evaluation) if x["set"] == "chat"]
    if chats:
        console.print(f"sample: [bold]user>[/] {chats[0]['prompt']}\n        [bold]model>[/] {chats[0]['generation']}")


def _print_scores_and_registration(scores: dict, registration: dict, shown: tuple[str, ...]) -> None:
    """The evaluation's scores named by the `shown` prefixes, then the version and the gate's reason."""
    r = registration
    picked = [f"{k} {v:.4g}" for k, v in scores.items() if k.startswith(shown) and _is_num(v)]
    console.print("evaluation: " + (", ".join(picked) or "no scores"), highlight=False)
    console.print(
        f"[bold]registered[/] {r['model_uri']} ({r['decision']}; aliases {', '.join('@' + a for a in r['aliases'])})\n"
        f"  {r['reason']}",
        highlight=False,
    )


def _samples(evaluation) -> list[dict]:
    """An evaluation's samples: set, prompt, generation, reference."""
    path = evaluation.dir / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def main() -> None:
    collect_less_often()
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted: published artifacts are intact; re-run to resume")
        exit_now(130)
    except SystemExit as e:
        exit_now(e.code)
