"""The `review` flow: make a review round (what `lmforge review new` does) from a deployment a
team schedules or runs from the Prefect UI, and say how to serve it.

    challenger  a model spec (`latest` by default)
    champion    a model spec; default: `models:/<name>@champion`, the champion of the name the
                challenger registers under (models:/ specs name it; else registry.model_name /
                finetune.model_name, as `register` names it)
    prompts     heldout | evaluation | a JSONL file; default as `lmforge review new`
    items       prompts in the round; default review.prompts
      -> the round (an open round of the same two models is taken up again, its votes kept)
      -> a markdown artifact `review-round-<name>`: the round, `lmforge review serve <id>`, how to close

The flow makes and announces the round, then ends: serving the page and closing the round stay
`lmforge review serve` / `close` (or the register flow's gate, flows/review_gate.py).
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import STAGE_FLOW, ConfigParameter
from flows.review_gate import artifact_key, open_or_new_round, say
from lm_core.config import Config
from lm_core.model_spec import find_model_artifact, registered_model_name, store_uri
from lm_core.registry.fingerprint import model_name
from lm_core.review.round import ReviewError, Round
from lm_core.ui_text import md_escape
from lm_core.workspace import Workspace
from tasks.ui_artifacts import send_schedule_hint, send_ui_artifact


@flow(name="review", description="make a review round: the challenger against the champion", **STAGE_FLOW)
def review_flow(
    config: ConfigParameter,
    challenger: str = "latest",
    champion: str | None = None,
    prompts: str | None = None,
    items: int | None = None,
) -> str:
    """Make (or take up) a review round between two models and announce it; its id."""
    send_schedule_hint()
    if items is not None:
        if items < 1:
            raise ReviewError(f"items={items}: a round needs at least one prompt")
        config = config.model_copy(update={"review": config.review.model_copy(update={"prompts": items})})
    ws = Workspace(config.workspace)
    challenger_ref = find_model_artifact(challenger, ws, config.tracking_uri)
    champion = champion or champion_of(config, challenger, challenger_ref.stage)
    rnd = open_or_new_round(config, ws, challenger, champion, prompts)
    name = registered_name(config, challenger, challenger_ref.stage)
    say(f"review    round {rnd.id}: {len(rnd)} prompts; `lmforge review serve {rnd.id}`")
    send_ui_artifact(
        create_markdown_artifact,
        how_to_serve(config, rnd),
        key=f"review-round-{artifact_key(name)}",
        description=f"review round {rnd.id}: {challenger} against {champion}",
    )
    return rnd.id


def registered_name(config: Config, spec: str, stage: str) -> str:
    """The name the challenger is (or would be) registered under."""
    return registered_model_name(spec) or model_name(config, stage)


def champion_of(config: Config, challenger: str, stage: str) -> str:
    """`models:/<name>@champion` for the challenger's registered name, if that alias exists."""
    from lm_core.registry.register import current_champion  # MLflow: only when a run asks for the champion

    name = registered_name(config, challenger, stage)
    try:
        found = current_champion(store_uri(config.tracking_uri, config.workspace), name)
    except LookupError:  # no MLflow store yet: nothing registered
        found = None
    if found is None:
        raise ReviewError(
            f"{name} has no champion (models:/{name}@champion) to compare {challenger!r} with: "
            "register one (lmforge stage register) or give the champion parameter a model spec"
        )
    return f"models:/{name}@champion"


def how_to_serve(config: Config, rnd: Round) -> str:
    m = rnd.meta
    where = f" --set workspace={Workspace(config.workspace).root}"
    votes = len(rnd.store.votes())
    lines = [
        f"## Review round `{rnd.id}`",
        "",
        f"{len(rnd)} prompts ({md_escape(m['prompts']['source'])}), both models' answers side by side, blind:",
        "",
    ]
    for role in ("challenger", "champion"):
        lines.append(f"- {role}: `{m[role]['stage']}/{m[role]['fingerprint'][:12]}` ({md_escape(m[role]['spec'])})")
    if votes:
        lines += ["", f"An open round of the same two models, taken up again: {votes} votes so far."]
    lines += [
        "",
        f"1. Serve the page to reviewers: `lmforge review serve {rnd.id}{where}` "
        f"(http://127.0.0.1:{config.review.port}/).",
        f"2. When enough votes are in: `lmforge review close {rnd.id}{where}` (results, the published votes),",
        f"   then `lmforge review pairs {rnd.id} --out DIR{where}` for the next fine-tuning data.",
    ]
    return "\n".join(lines)
