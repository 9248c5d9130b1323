"""`lmforge`: the one command-line entry point.

    lmforge run      [--config F] [--set k=v ...]     the lifecycle: data, pretrain, evaluate, register
    lmforge data     [--config F] [--set k=v ...]     crawl -> clean -> tokenize -> chunk
    lmforge stage NAME [--input latest|FP] [--force]  one stage alone, on earlier artifacts
                 (pretrain --data FP; evaluate/finetune --model FP|models:/name@alias)
    lmforge export   --model SPEC --out DIR           a Hugging Face folder (Llama or Qwen3 layout)
    lmforge generate --model SPEC "prompt" ...        continue prompts
    lmforge chat     --model SPEC                     talk to a model in the terminal
                 (SPEC: latest, the newest model artifact (the chat model once fine-tuning ran);
                  a fingerprint prefix; a model folder; models:/name@alias or models:/name/N)
    lmforge ls       [--stage S]                      artifacts in the workspace
    lmforge config   [--config F] [--set k=v ...]     print the resolved configuration
    lmforge server   [--postgres URL] [--mlflow-backend URL]  Prefect and MLflow servers on 127.0.0.1
    lmforge serve    [--config F]                     serve a deployment per flow, with the config's schedules
    lmforge deploy   [--config F] [--pool NAME]       register them to a process work pool
    lmforge review   new|serve|close|pairs            human review rounds: a local page, votes, DPO pairs

Quiet by default: a line per stage, progress bars on a terminal, a summary that pastes; a failure
is one `error:` line. `-v` (before or after the command) adds Prefect's run logs, MLflow's and other
libraries' messages, and the traceback of a failure.

The configuration is loaded and validated before anything else happens, and the environment
(PREFECT_HOME inside the workspace, telemetry off) is set before Prefect is first imported.
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import shlex
import shutil
import signal
import sys
import traceback
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.text import Text

from lm_core.config import Config, ConfigError, default_tracking_uri, load_config
from lm_core.lazy import load
from lm_core.mlflow_ui import TRAINING_VIEW
from lm_core.secrets import mask_url, mask_urls
from lm_core.stages import STAGE, STAGE_NAMES, STAGES, Stage, stages_in
from lm_core.workspace import Workspace
from lmforge.embedded import EmbeddedServer, announced_mlflow, announced_server
from lmforge.process import (
    OUR_PACKAGES,
    collect_less_often,
    exit_now,
    imports_without_collection,
    is_verbose,
    quiet_console,
    set_verbosity,
    stdout_gone,
)
from lmforge.server import ServerError, Servers, check_tracking_server, crash_unresponsive_runs

# MLflow's download progress bars would interleave with our output (and generated text).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # a docstring's lines are joined into paragraphs, as wide as the terminal
    help="lmforge: from URLs to a trained GPT-style model.",
)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE", help="YAML run configuration")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="SECTION.FIELD=VALUE", help="override a value (repeatable), read as YAML"),
]


def _version(value: bool) -> None:
    if value:
        console.print(f"lmforge {metadata.version('lmforge')}", highlight=False)
        raise typer.Exit()


@app.callback()
def options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="also show Prefect's run logs, MLflow's and other libraries' messages, tracebacks"
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print lmforge's version and exit")
    ] = False,
) -> None:
    """lmforge: from URLs to a trained GPT-style model."""
    set_verbosity(verbose)


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
            quiet_console()  # Prefect's terminal handler exists now: its run logs only with -v
            server.wait()
        with server.settings():  # on leaving, the server has recorded every run it was sent
            return a_flow(config=cfg, **params)
    except typer.Exit:
        raise
    except Exception as e:  # Prefect has logged it (with -v, in the terminal too): one line here
        _fail_with(e)
    finally:
        server.stop(wait=False)  # it finishes shutting down on its own while this command exits


def _fail(problem: Exception | str, code: int = 1) -> None:
    """Print `error: <problem>` and exit with `code` (2: a usage error, before any work)."""
    # unwrapped: names and URIs stay copyable; a URL's password never shown
    err.print(f"[red]error:[/] {mask_urls(str(problem))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code) from None


def _fail_with(e: BaseException) -> None:
    """Fail on an exception: its one `error:` line, its traceback above it only with -v."""
    if is_verbose():
        traceback.print_exception(e)
    _fail(_describe(e))


def _describe(e: BaseException) -> str:
    """What an exception says to a user. lmforge's own errors (bad input, a missing artifact, a
    server down) name the problem and the fix: their message alone. A full disk says so. Others
    (a library's, or a bug) keep their type, and say where the traceback is."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" ({e.filename})" if e.filename else ""
        return f"the disk is full{where}: free some space and run the command again; published artifacts are intact"
    message = str(e) or type(e).__name__
    ours = type(e).__module__.split(".")[0] in OUR_PACKAGES
    if ours or isinstance(e, ValueError | OSError):
        return message
    return f"{type(e).__name__}: {message} (run with -v to see the traceback)"


@app.command()
def run(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False, refresh: RefreshOpt = False) -> None:
    """The whole lifecycle, from sources to a registered model.

    crawl -> clean -> tokenize -> chunk -> stats -> pretrain -> evaluate -> register, then, with
    finetune.enabled, fine-tune the model into a chat model -> evaluate -> register it. A stage whose
    artifact is already in the workspace is not run again."""
    cfg = _load(config, set_)
    refs = _orchestrate(cfg, "flows.lifecycle:lifecycle_flow", force=force, refresh=refresh)
    data = [getattr(refs.data, s.name) for s in stages_in("data")]
    chat = [r for r in (refs.finetune, refs.chat_evaluate, refs.chat_registration) if r is not None]
    _print_artifacts([*data, refs.pretrain, refs.evaluate, refs.registration, *chat], cfg)
    _print_model(refs.pretrain, refs.evaluate, refs.registration, cfg)
    if refs.chat_registration is not None:
        _print_chat_model(refs.finetune, refs.chat_evaluate, refs.chat_registration, cfg)


@app.command()
def data(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False, refresh: RefreshOpt = False) -> None:
    """The data stages: crawl -> clean -> tokenize -> chunk -> stats, each cached by fingerprint."""
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
    """One stage alone, on an earlier artifact (its input: latest by default)."""
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
    typer.Option(
        "--model",
        "-m",
        help="latest: the workspace's newest model artifact (the chat model once fine-tuning ran); a fingerprint "
        "(prefix); a model folder; models:/<name>@<alias> or models:/<name>/<version>",
    ),
]
MaxNewOpt = Annotated[
    int | None,
    typer.Option(
        "--max-new-tokens",
        "-n",
        min=1,
        help="new tokens at most; the context holds them with the prompt (default: generate 64, chat 128, "
        "fewer where the context leaves less)",
    ),
]
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
    max_new_tokens: MaxNewOpt = None,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = None,
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Continue prompts with a trained or registered model (a chat model answers each as a user
    message). The context holds a prompt and its new tokens: --max-new-tokens (default: 64, fewer
    when the longest prompt leaves less room) that does not fit with the prompts is refused."""
    from lm_core.textgen import GenerationSettings  # torch: only the commands that run a model

    cfg = _load(config, set_)
    text_model = _load_model(model, cfg)
    try:
        ids = [text_model.prompt_ids(p) for p in prompts]
        new = text_model.fit(max(map(len, ids)), max_new_tokens)
    except ValueError as e:  # a prompt that is no message (chat model), or too long for the context
        _fail(str(e).replace("max_new_tokens", "--max-new-tokens"))
    settings = GenerationSettings(new, temperature, top_k, top_p, seed)
    for prompt, out in zip(prompts, text_model.generate_ids(ids, settings), strict=True):
        console.print(Text(prompt, style="bold") + Text(out), highlight=False)  # model text is never markup


@app.command()
def chat(
    model: ModelOpt = "latest",
    max_new_tokens: MaxNewOpt = None,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 50,
    top_p: TopPOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Talk to a model in the terminal. A chat model (fine-tuned) answers through its chat
    template, with the whole conversation as history; a base model continues the transcript.
    The oldest turns drop out when the context is full; a reply takes at most --max-new-tokens
    of it (default: 128, at most half the context). Ctrl-D or an empty line ends it."""
    from lm_core.textgen import GenerationSettings  # torch: only the commands that run a model
    from lm_core.tokenize.chat_template import Message

    cfg = _load(config, set_)
    text_model = _load_model(model, cfg)
    if max_new_tokens is None:
        max_new_tokens = min(128, text_model.context // 2)
    elif max_new_tokens >= text_model.context:
        _fail(
            f"--max-new-tokens {max_new_tokens} leaves no room for the conversation in the model's context of "
            f"{text_model.context} tokens: ask for fewer (default: {text_model.context // 2})",
            code=2,
        )
    kind = "chat model" if text_model.is_chat else "base model: it continues the transcript"
    console.print(Text(f"{text_model.source} ({kind}), {text_model.context}-token context. Ctrl-D to leave.", "dim"))
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
        console.print(Text("model> ", style="bold blue") + Text(reply), highlight=False)
        history.append(Message("assistant", reply or "..."))
        turn += 1


@app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="folder to write (a previous export there is replaced)")],
    model: ModelOpt = "latest",
    format_: Annotated[str, typer.Option("--format", help="hf: a transformers Qwen3 or Llama folder")] = "hf",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export any model `generate` loads, pretrained or chat, as a Hugging Face folder:
    `Qwen3ForCausalLM` (QK norm, the default) or `LlamaForCausalLM`; a chat model with its chat
    template and <|end|> as its eos."""
    if format_ != "hf":
        _fail(f"unknown export format {format_!r}; formats: hf", code=2)
    from lm_core.export import ExportError, export_hf  # torch: export alone

    cfg = _load(config, set_)
    text_model = _load_model(model, cfg)
    try:
        written = export_hf(text_model, out)
    except ExportError as e:
        _fail(e)
    kind = "chat model: tokenizer.apply_chat_template renders its conversations" if text_model.is_chat else "base model"
    console.print(
        f"wrote {written} from {text_model.source} ({kind}): load it with "
        f"transformers.AutoModelForCausalLM.from_pretrained({str(written)!r})",
        highlight=False,
    )


@app.command("ls")
def list_artifacts(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    stage_: Annotated[str | None, typer.Option("--stage", help="only this stage")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per artifact, for scripts")] = False,
) -> None:
    """Artifacts in the workspace, newest first, and the Prefect flow run that made each."""
    cfg = _load(config, set_)
    found = Workspace(cfg.workspace).artifacts(stage_)
    if as_json:
        for a in found:
            m = a["manifest"]
            keep = ("created", "rows", "bytes", "inputs", "origin")
            print(json.dumps({"stage": a["stage"], "fingerprint": a["fingerprint"], "path": a["path"]} | {
                k: m[k] for k in keep if k in m}))  # fmt: skip
        return
    ws = Path(cfg.workspace).resolve()
    if not found:
        console.print(f"no artifacts in {ws}", highlight=False, soft_wrap=True)
        return
    # two lines an artifact, each under 80 columns: what it is, then where it came from
    console.print(f"artifacts in {ws}, newest first:", highlight=False, soft_wrap=True)
    rows = [
        (a["stage"], a["fingerprint"], _when(m.get("created")), _num(m.get("rows")),
         _num(_tokens(m.get("stats", {}))), _size(m.get("bytes")))
        for a in found
        for m in [a["manifest"]]
    ]  # fmt: skip
    header = ("stage", "fingerprint", "created", "rows", "tokens", "size")
    for line, a in zip(_columns([header, *rows], right=(3, 4, 5)), [None, *found], strict=True):
        console.print(f"[bold]{line}[/]" if a is None else line, highlight=False, soft_wrap=True)
        if a is not None:
            m = a["manifest"]
            inputs = [f"{k}:{v if k == 'snapshot' else v[:8]}" for k, v in m.get("inputs", {}).items()
                      if isinstance(v, str) and (k in STAGE or k == "snapshot")]  # fmt: skip
            notes = [f"made by {_made_by(m.get('origin', {}))}", *(["from " + " ".join(inputs)] if inputs else [])]
            fits = len("  " + ", ".join(notes)) <= console.width
            for note in [", ".join(notes)] if fits else notes:
                console.print(f"  [dim]{note}[/]", highlight=False, soft_wrap=True)


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
    """The Prefect and MLflow servers with their UIs, on 127.0.0.1.

    Ctrl-C stops both; so does the end of this command, however it ends. A port in use is an error,
    naming what holds it."""
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
        servers.check_ports()  # a port in use: fail now, naming what holds it, having started nothing
    except ServerError as e:
        _fail(e)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # even when started in the background, where SIGINT is ignored
    stopped_by_user, failure = False, None
    try:
        _tell("starting the Prefect and MLflow servers (a fresh Prefect database takes a minute) ...")
        servers.start()
        silent_s = crash_unresponsive_runs(f"{servers.prefect_url}/api", unresponsive_after)
        width = max(map(len, servers.describe()))
        for k, v in servers.describe().items():
            _tell(f"  {k:<{width}}  {v}")
        if silent_s is not None:
            _tell(f"a run whose process is gone (no heartbeat for {silent_s:g} s) is marked Crashed")
        _tell(
            "lmforge commands on this workspace now record their runs in this Prefect server (live in its UI);\n"
            "other clients, and MLflow through its server:\n"
            f"  export PREFECT_API_URL={servers.prefect_url}/api\n"
            f"  lmforge run --config <your config> --set tracking.tracking_uri={servers.mlflow_url}\n"
            "the Deployments page fills once the flows are scheduled, with PREFECT_API_URL exported as above:\n"
            "  lmforge serve --config <your config>    (from that process, until Ctrl-C)\n"
            "  lmforge deploy --config <your config>   (to a work pool, for `prefect worker start`)\n"
            "Ctrl-C stops both."
        )
        exited = servers.wait()
        failure = f"the {exited} server stopped on its own; see its log in {servers.prefect_home}"
    except KeyboardInterrupt:
        stopped_by_user = True
    except Exception as e:  # ServerError: one did not start; anything else: still stop both first
        failure = e
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        _tell("stopping the servers ...")
        servers.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if isinstance(failure, BaseException):
        _fail_with(failure)
    if not stopped_by_user:
        _fail(failure)
    _tell("stopped")


def _tell(text: str) -> None:
    """A line of `lmforge server`, which outlives its reader: piped into `tee` or `head` that has
    gone (Ctrl-C ends both), the line is dropped, and the servers still serve, or stop, as asked."""
    try:
        console.print(text, highlight=False, soft_wrap=True)
    except (BrokenPipeError, SystemExit):  # rich's answer to a closed pipe is SystemExit(1): not here
        stdout_gone()
        console.quiet = True  # nothing more to say to anyone


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


# The summary a run ends with is read at 80 columns and copied from: a table's lines fit in 80
# columns, and a path or a command is printed whole on a line of its own (never cut, never split
# by a wrap), so that it pastes as it is.


def _columns(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> list[str]:
    """`rows` as lines of aligned columns (two spaces apart), the columns numbered in `right` right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]


def _say(text: str = "", markup: bool = False) -> None:
    """A line of the summary, never wrapped by rich (a terminal may fold a long one; a copy of it
    is still one line)."""
    console.print(text, markup=markup, highlight=False, soft_wrap=True)


def _print_artifacts(refs, cfg: Config) -> None:
    ws = Path(cfg.workspace).resolve()
    _say("\nartifacts, each in <workspace>/<stage>/<fingerprint>, the workspace being")
    _say(f"  {ws}")
    rows = [(r.stage, r.fingerprint, _num(r.stats.get("rows")), _num(_tokens(r.stats))) for r in refs]
    for line in _columns([("stage", "fingerprint", "rows", "tokens"), *rows], right=(2, 3)):
        _say(f"  {line}")
    _say("list them any time with:")
    _say(f"  {_command('lmforge', 'ls', *_where(cfg))}")


def _command(program: str, *args: str) -> str:
    """A command line to paste: `program` (lmforge, mlflow) as this shell finds it, or the path of
    the one beside this Python; arguments quoted for the shell where they need it."""
    mine = Path(sys.executable).parent / program
    found = shutil.which(program)
    if found and Path(found).resolve() == mine.resolve():
        shown = program
    else:
        shown = os.path.relpath(mine) if mine.is_relative_to(Path.cwd()) else str(mine)
    return " ".join([shlex.quote(shown), *(shlex.quote(a) for a in args)])


def _where(cfg: Config) -> list[str]:
    """The options that point a later command at this run's workspace and tracking store, unless
    it finds them by default (the same ./workspace or LMFORGE_WORKSPACE, no tracking URI set)."""
    args = []
    if Path(cfg.workspace).resolve() != Path(os.environ.get("LMFORGE_WORKSPACE") or "workspace").resolve():
        args += ["--set", f"workspace={Path(cfg.workspace).resolve()}"]
    if cfg.tracking.tracking_uri:
        args += ["--set", f"tracking.tracking_uri={mask_url(cfg.tracking.tracking_uri)}"]
    return args


def _one_line(text: str, limit: int = 150) -> str:
    """Generated text on one line: whitespace collapsed, cut at `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _print_model(model, evaluation, registration, cfg: Config) -> None:

    s, e, r = model.stats, evaluation.stats, registration.stats
    console.print(
        f"\n[bold]model[/] {model.fingerprint}: {s.get('params', 0) / 1e6:.1f}M parameters, {s.get('steps')} steps, "
        f"{s.get('tokens', 0):,} tokens",
        highlight=False,
    )
    _print_scores_and_registration(e, r, ("val_", "text.", "bleu.", "chrf."))
    samples = _samples(evaluation)
    if samples:
        first = samples[0]
        console.print(f"sample: {_one_line(first['prompt'] + first['generation'])}", markup=False, highlight=False)
    name, ws = r["name"], Path(cfg.workspace).resolve()
    serve = _command("mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local")
    _say("\nnext:")
    _say("  continue a prompt with the model:")
    _say(f"    {_command('lmforge', 'generate', *_where(cfg), '--model', f'models:/{name}@champion', 'The')}")
    _say("  serve it over HTTP:")
    _say(f"    MLFLOW_TRACKING_URI={shlex.quote(mask_url(cfg.tracking_uri))} {serve}")
    _print_ui_hint(cfg, ws)
    _say("  export it as a Hugging Face folder:")
    _say(f"    {_command('lmforge', 'export', *_where(cfg), '--model', model.fingerprint[:8], '--out', 'hf-model')}")


def _print_ui_hint(cfg: Config, ws: Path) -> None:
    """Where the UIs are when `lmforge server` serves this workspace, else how to start them."""
    home = Path(os.environ.get("PREFECT_HOME", ws / ".prefect"))
    prefect_api, mlflow = announced_server(home), announced_mlflow(home)
    if prefect_api:
        _say("  the UIs, live:")
        _say(f"    Prefect {prefect_api.removesuffix('/api')}")
        if mlflow:
            _say(f"    MLflow  {mlflow['url']}/#/experiments?{TRAINING_VIEW}")
        return
    _say("  the UIs (Prefect http://127.0.0.1:4200, MLflow http://127.0.0.1:5000):")
    _say(f"    {_command('lmforge', 'server', '--set', f'workspace={ws}', *_backend_option(cfg))}")


def _local_tracking_store(cfg: Config) -> str | None:
    """The tracking store the config names when it is a database `lmforge server` can serve
    (not a tracking server's http(s) URL); None when it names none."""
    uri = cfg.tracking.tracking_uri
    return uri if uri and not uri.startswith(("http:", "https:")) else None


def _backend_option(cfg: Config) -> list[str]:
    """`lmforge server`'s option for a tracking store set in the config (a local database)."""
    uri = _local_tracking_store(cfg)
    return ["--mlflow-backend", mask_url(uri)] if uri else []


def _print_chat_model(model, evaluation, registration, cfg: Config) -> None:

    s, e, r = model.stats, evaluation.stats, registration.stats
    console.print(
        f"\n[bold]chat model[/] {model.fingerprint} ({s.get('method')}, {s.get('steps')} steps on "
        f"{s.get('train_examples')} chats from {s.get('source')}): held-out loss "
        f"{s.get('initial_heldout_loss', float('nan')):.3f} -> {s.get('heldout_loss', float('nan')):.3f}",
        highlight=False,
    )
    _print_scores_and_registration(e, r, ("bleu.", "chrf.", "val_bpb"))
    chats = [x for x in _samples(evaluation) if x["set"] == "chat"]
    if chats:
        console.print(f"sample: user> {_one_line(chats[0]['prompt'])}", markup=False, highlight=False)
        console.print(f"        model> {_one_line(chats[0]['generation'])}", markup=False, highlight=False)
    _say("  talk to it:")
    _say(f"    {_command('lmforge', 'chat', *_where(cfg), '--model', 'models:/' + r['name'] + '@champion')}")


def _print_scores_and_registration(scores: dict, registration: dict, shown: tuple[str, ...]) -> None:
    """The evaluation's scores named by the `shown` prefixes, then the version and the gate's reason."""
    r = registration
    picked = [f"{k} {v:.4g}" for k, v in scores.items() if k.startswith(shown) and _is_num(v)]
    for line in _wrap_items("evaluation: ", picked or ["no scores"], console.width):
        _say(line)
    console.print(
        f"[bold]registered[/] {r['model_uri']} ({r['decision']}; aliases {', '.join('@' + a for a in r['aliases'])})\n"
        f"  {r['reason']}",
        highlight=False,
    )


def _wrap_items(first: str, items: list[str], width: int) -> list[str]:
    """`first` and the comma-separated `items` in lines of at most `width` columns, broken between
    items only (a score's name and value stay on one line), the lines after the first indented."""
    lines, line = [], first
    for item in items:
        if line.strip() and line != first and len(line) + 2 + len(item) > width:
            lines.append(line + ",")
            line = "  " + item
        else:
            line += (", " if line != first else "") + item
    return [*lines, line]


def _samples(evaluation) -> list[dict]:
    """An evaluation's samples: set, prompt, generation, reference."""
    path = evaluation.dir / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def main() -> None:
    collect_less_often()
    try:
        app(args=_verbose_first(sys.argv[1:]), prog_name="lmforge")
    except KeyboardInterrupt:
        err.print("interrupted: published artifacts are intact; re-run to resume")
        exit_now(130)
    except SystemExit as e:
        exit_now(e.code)
    except BrokenPipeError:  # `lmforge ls | head`: the reader has all it wanted
        stdout_gone()
        exit_now(141)  # as a process killed by SIGPIPE
    except Exception as e:  # one `error:` line, whatever failed; the traceback with -v
        try:
            _fail_with(e)
        except typer.Exit as stop:
            exit_now(stop.exit_code)


def _verbose_first(args: list[str]) -> list[str]:
    """-v/--verbose is an option of `lmforge` itself; take it after the command too (`lmforge run -v`)."""
    end = args.index("--") if "--" in args else len(args)
    flags = [a for a in args[:end] if a in ("-v", "--verbose")]
    return [*(["--verbose"] if flags else []), *(a for a in args[:end] if a not in flags), *args[end:]]


# ----------------------------------------------------------------------------- review rounds

review_cli = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Human review: people compare a challenger's and a champion's answers on a local page; "
    "their votes give a win rate and the next DPO/SFT data (docs/review.md).",
)
app.add_typer(review_cli, name="review")
RoundArg = Annotated[str, typer.Argument(metavar="ROUND", help="a round's id (or a prefix of it)")]


@review_cli.command("new")
def review_new(
    challenger: Annotated[
        str, typer.Option("--challenger", metavar="SPEC", help="the model under review: a spec as --model takes")
    ],
    champion: Annotated[str, typer.Option("--champion", metavar="SPEC", help="the model it is compared with")],
    prompts: Annotated[
        str | None,
        typer.Option(
            "--prompts",
            metavar="FILE",
            help='a JSONL file of {"prompt": ...} or {"messages": [...]} lines; or heldout, evaluation '
            "(default: the held-out chats, else the evaluation's prompts)",
        ),
    ] = None,
    items: Annotated[
        int | None, typer.Option("-n", "--items", min=1, metavar="N", help="prompts in the round (review.prompts)")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Make a review round: both models answer the same prompts once; each item gets a blind order."""
    from lm_core.review.make import new_round  # torch: only the command that runs the models

    cfg = _load(config, [*(set_ or []), *([f"review.prompts={items}"] if items else [])])
    rnd = new_round(Workspace(cfg.workspace), challenger, champion, cfg.review, prompts, cfg.tracking.tracking_uri)
    m = rnd.meta
    _say(f"review round {rnd.id}: {len(rnd)} prompts ({m['prompts']['source']})")
    for role in ("challenger", "champion"):
        _say(f"  {role:<10}  {m[role]['stage']}/{m[role]['fingerprint']}  ({m[role]['spec']})")
    _say(f"  in {rnd.dir}")
    _say("serve it to reviewers (http://127.0.0.1, Ctrl-C stops):")
    _say(f"  {_command('lmforge', 'review', 'serve', *_where(cfg), rnd.id)}")


@review_cli.command("serve")
def review_serve(
    round_: Annotated[
        str | None, typer.Argument(metavar="ROUND", help="a round's id (prefix); default: the newest open round")
    ] = None,
    host: Annotated[str, typer.Option("--host", metavar="ADDRESS", help="the address to listen on")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, metavar="PORT", help="default: review.port; 0: any free")
    ] = None,
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow a --host beyond this machine (anyone reaching it can vote)")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Serve a round's review page until Ctrl-C. Votes are stored as they arrive."""
    from lm_core.review.round import find_round  # pyarrow (0.1 s): for review commands only
    from lmforge.review_app import listen, serve_round  # uvicorn, Starlette: this command only

    cfg = _load(config, set_)
    rnd = find_round(cfg.workspace, round_, open_only=round_ is None)
    if rnd.closed_at:
        _fail(f"review round {rnd.id} is closed (its votes are published): make a new one with `lmforge review new`")
    sock = listen(host, cfg.review.port if port is None else port, allow_remote)
    shown = f"[{host}]" if ":" in host else host
    _say(f"review round {rnd.id} ({len(rnd)} items): http://{shown}:{sock.getsockname()[1]}/  (Ctrl-C stops)")
    sys.stdout.flush()
    serve_round(rnd, sock, allow_remote)


@review_cli.command("close")
def review_close(round_: RoundArg, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Close a round (no more votes) and publish its votes and results as a `votes` artifact."""
    from lm_core.review.gate import review_decision  # pyarrow (0.1 s): for review commands only
    from lm_core.review.results import RESULTS_FILE, VOTES_TABLE, close_round
    from lm_core.review.round import find_round
    from lm_core.review.votes import CRITERIA

    cfg = _load(config, set_)
    rnd = find_round(cfg.workspace, round_)
    ref = close_round(rnd, Workspace(cfg.workspace))
    r = json.loads((ref.dir / RESULTS_FILE).read_text(encoding="utf-8"))
    _say(f"closed review round {rnd.id}: {r['votes']} votes on {r['items_voted']} of {r['items']} items")
    _say(f"  reviewers: {', '.join(f'{k} ({v})' for k, v in r['reviewers'].items()) or 'none'}")
    if r["win_rate"] is not None:
        lo, hi = r["ci"]
        p = r["preferred"]
        _say(
            f"  challenger win rate {r['win_rate']:.2f} ({round(100 * r['confidence'])}% CI {lo:.2f}-{hi:.2f}, "
            f"ties half): preferred {p['challenger']}, champion {p['champion']}, tie {p['tie']}"
        )
        rows = [("ratings 1-5", *CRITERIA)]
        for model in ("challenger", "champion"):
            means = [r["ratings"][model][c] for c in CRITERIA]
            rows.append((f"  {model}", *("-" if v is None else f"{v:.2f}" for v in means)))
        for line in _columns(rows, right=(1, 2, 3)):
            _say(f"  {line}")
        a = r["agreement"]
        if a["items"]:
            kappa = "undefined" if a["fleiss_kappa"] is None else f"{a['fleiss_kappa']:.2f}"
            _say(
                f"  agreement on {a['items']} items judged by 2+ reviewers: {a['pairwise']:.0%} of pairs agree, "
                f"Fleiss' kappa {kappa}"
            )
    d = review_decision(r, cfg.review.min_votes, cfg.review.min_win_rate)
    _say(f"  gate: {d.decision} ({d.reason})")
    from lm_core.registry.promote import log_review_run, registered_challenger  # MLflow: this command only

    registered = registered_challenger(cfg.tracking_uri, rnd.meta)
    if registered is not None:  # the results beside the challenger's training and evaluation
        name, version, run_id = registered
        log_review_run(cfg.tracking_uri, run_id, r, ref.dir)
        _say(f"  logged to MLflow: the run {run_id} of {name} v{version} (metrics review/*, review/{rnd.id}/)")
    _say(f"published {ref.stage}/{ref.fingerprint}; read it with datasets:")
    _say(f"  datasets.Dataset.from_file({str(ref.dir / VOTES_TABLE)!r})")
    _say("its votes as DPO pairs and chat examples:")
    _say(f"  {_command('lmforge', 'review', 'pairs', *_where(cfg), rnd.id, '--out', 'review-data')}")


@review_cli.command("pairs")
def review_pairs(
    round_: RoundArg,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="where to write preferences.jsonl, chats.jsonl")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """A closed round's votes as fine-tuning data: DPO pairs (finetune.preference_files) and the
    written answers as chat examples (finetune.chat_files). Ties and split votes are dropped."""
    from lm_core.review.results import STAGE as VOTES  # pyarrow (0.1 s): for review commands only
    from lm_core.review.round import find_round
    from lm_core.review.training_data import write_training_data

    cfg = _load(config, set_)
    ws = Workspace(cfg.workspace)
    rnd = find_round(cfg.workspace, round_)
    fp = rnd.store.state("artifact")
    if not fp or not ws.is_published(VOTES, fp):
        _fail(f"review round {rnd.id} is not closed: close it first with `lmforge review close {rnd.id}`")
    s = write_training_data(ws.artifact_dir(VOTES, fp), out)
    d = s["dropped"]
    _say(f"{s['pairs']} preference pairs and {s['chats']} chat examples from {s['items_voted']} items voted on")
    _say(f"  dropped: {d['ties']} ties, {d['disagreement']} without a majority, {d['unusable']} with unusable answers")
    if "preference_file" in s:
        _say(f"  finetune.preference_files (method dpo): {s['preference_file']}")
    if "chat_file" in s:
        _say(f"  finetune.chat_files (method sft): {s['chat_file']}")
