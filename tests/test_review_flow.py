"""The `review` flow (flows/review.py): a deployment's way to make a review round. Run against
the embedded Prefect API on a tiny workspace whose first model is the registered champion: it
makes a round of the models named, announces it as an artifact, and refuses what it cannot
compare with one clear error."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.review import review_flow
from lm_core.evaluate.stage import run_evaluate
from lm_core.model_spec import ModelArtifactNotFound
from lm_core.registry.stage import run_register
from lm_core.review.round import ReviewError, rounds
from lm_core.train.stage import run_pretrain
from tests.helpers import pretrained_workspace

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

TOPICS = ["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry"]
EVALUATE = ["evaluate.heldout_pairs=4", "evaluate.prompt_tokens=12", "evaluate.reference_tokens=8"]
EVALUATE += ["evaluate.val_batches=2", "evaluate.generation.max_new_tokens=8"]
NAME = "review-flow"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The champion (registered, 2 steps) and a newer model (4 steps), both evaluated."""
    root = tmp_path_factory.mktemp("review-flow")
    cfg, ws, chunk, champion = pretrained_workspace(
        root, TOPICS, 16, "pretrain.max_steps=2", "pretrain.eval_every=2", *EVALUATE,
        "review.max_new_tokens=8", f"registry.model_name={NAME}",
    )  # fmt: skip
    newer_cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(update={"max_steps": 4})})
    newer = run_pretrain(newer_cfg, chunk, ws)
    for model in (champion, newer):
        evaluation = run_evaluate(cfg.evaluate, model, chunk, ws)
        if model is champion:
            run_register(cfg, evaluation, ws)  # the first version of NAME: champion
    return cfg, ws, champion, newer


def flow_artifacts(state) -> dict:
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return {a.key: a for a in found if a.key}


def test_the_flow_makes_a_round_of_the_latest_model_against_its_champion_and_announces_it(workspace, tmp_path):
    cfg, ws, champion, newer = workspace
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "what is {t}?"}}\n' for t in TOPICS))
    state = review_flow(config=cfg, prompts=str(prompts), items=3, return_state=True)
    round_id = state.result()
    (rnd,) = [r for r in rounds(ws.root) if r.id == round_id]
    assert len(rnd) == 3 and not rnd.closed_at
    assert rnd.meta["challenger"]["fingerprint"] == newer.fingerprint  # `latest`: the newest model
    assert rnd.meta["champion"]["fingerprint"] == champion.fingerprint
    assert rnd.meta["champion"]["spec"] == f"models:/{NAME}@champion"
    assert rnd.meta["prompts"] == {"source": f"file:{prompts}", "available": len(TOPICS)}

    (artifact,) = flow_artifacts(state).values()
    assert artifact.key == f"review-round-{NAME}"
    assert f"lmforge review serve {round_id}" in artifact.data
    assert f"lmforge review close {round_id}" in artifact.data

    # run again (a schedule's next tick): the open round of the same two models is taken up
    assert review_flow(config=cfg, challenger=newer.fingerprint, items=3) == round_id
    assert len(rounds(ws.root)) == 1


def test_an_unknown_or_missing_champion_is_one_clear_error_and_makes_no_round(workspace):
    cfg, ws, champion, newer = workspace
    before = [r.id for r in rounds(ws.root)]
    with pytest.raises(ModelArtifactNotFound, match="no registered model 'nobody'.*registered models: review-flow"):
        review_flow(config=cfg, challenger=newer.fingerprint, champion="models:/nobody@champion", items=2)
    with pytest.raises(ModelArtifactNotFound, match="'no-such-model'"):
        review_flow(config=cfg, champion="no-such-model", items=2)
    unregistered = cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"model_name": "unregistered"})})
    with pytest.raises(ReviewError, match=r"unregistered has no champion .*give the champion parameter"):
        review_flow(config=unregistered, items=2)
    assert [r.id for r in rounds(ws.root)] == before
    assert not list((ws.root / "review").glob(".partial-*"))
