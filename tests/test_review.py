"""Human review rounds: a round holds both models' answers, generated once in a seeded blind
order; reviewers vote on a real page in a real browser (headless Chromium), votes survive a
killed server and concurrent writers, the closed round is a published `datasets`-readable
artifact with its results, and its votes become DPO pairs and chat examples the fine-tuning
readers take. Hostile input (markup in answers, malformed votes, a public address) is refused
or shown as text."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import httpx
import pytest
import torch

from lm_core.config import ReviewConfig
from lm_core.finetune.data import read_chat_jsonl, read_preferences_jsonl
from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import mark_chat_model, save_weights
from lm_core.review.gate import review_decision
from lm_core.review.make import generate_answers, new_round
from lm_core.review.prompts import file_prompts
from lm_core.review.results import SCHEMA, cohen_kappa, fleiss_kappa, round_results
from lm_core.review.round import ROUNDS_DIR, Round, find_round
from lm_core.review.training_data import review_examples
from lm_core.review.votes import RoundClosed, VoteError, VoteStore, parse_vote
from lm_core.textgen import GenerationSettings, TextModel
from lm_core.tokenize.bpe import train_tokenizer
from lm_core.tokenize.chat_template import ChatDataError
from lm_core.workspace import Workspace, fingerprint

LMFORGE = str(Path(sys.executable).parent / "lmforge")
CHROMIUM = "/usr/bin/chromium"
TEXTS = [
    "which colour is the arrow? the arrow is red and the shard is blue",
    "hello world, a small corpus for a small tokenizer of chat models",
    "models are registered, evaluated, reviewed and served to people",
] * 10
SCRIPT = "<script>window.__pwned = 1</script>"
QUESTIONS = [
    f"What does the page say? {SCRIPT}",
    "Which colour is the arrow?",
    "Say hello to the world.",
    "How are models served?",
    "Who reviews the models?",
]


def chat_model_artifact(ws: Workspace, seed: int) -> str:
    """A tiny chat model with random weights published as a finetune artifact, with held-out
    chats; returns its fingerprint."""
    fp = fingerprint("finetune", {"seed": seed}, {}, 1)
    with ws.build("finetune", fp, config={"seed": seed}, inputs={}) as b:
        tokenizer = train_tokenizer(TEXTS, vocab_size=320)
        tokenizer.save(str(b.dir / "tokenizer.json"))
        cfg = GPTConfig(vocab_size=tokenizer.get_vocab_size(), seq_len=64, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
        torch.manual_seed(seed)
        save_weights(GPT(cfg), b.dir / "model.safetensors")
        (b.dir / "model_config.json").write_text(json.dumps(cfg.to_dict()))
        mark_chat_model(b.dir)
        (b.dir / "data").mkdir()
        with open(b.dir / "data" / "heldout.jsonl", "w") as f:
            for i, q in enumerate(QUESTIONS * 3):
                turns = [{"role": "user", "content": f"{q} ({i})"}, {"role": "assistant", "content": "It is red."}]
                f.write(json.dumps({"messages": turns}) + "\n")
    return fp


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Workspace, str, str]:
    ws = Workspace(tmp_path_factory.mktemp("review") / "ws")
    return ws, chat_model_artifact(ws, seed=1), chat_model_artifact(ws, seed=2)


SMALL = ReviewConfig(prompts=5, max_new_tokens=12, temperature=0.8, top_k=50, seed=3)


# ----------------------------------------------------------------------------- making a round


def test_a_round_holds_both_answers_generated_once_in_a_seeded_blind_order(models):
    ws, challenger, champion = models
    rnd = new_round(ws, challenger[:10], champion[:10], SMALL.model_copy(update={"prompts": 12}))
    again = new_round(ws, challenger[:10], champion[:10], SMALL.model_copy(update={"prompts": 12}))
    assert rnd.id != again.id and len(rnd) == 12
    assert rnd.meta["challenger"]["fingerprint"] == challenger and rnd.meta["champion"]["fingerprint"] == champion
    assert rnd.meta["prompts"] == {"source": f"heldout:finetune/{challenger}", "available": 15}
    # the same seed: the same prompts, answers and order; answers are what the model generates
    assert [(i.prompt, i.answers, i.order) for i in rnd.items] == [(i.prompt, i.answers, i.order) for i in again.items]
    model = TextModel.load(ws.artifact_dir("finetune", challenger))
    settings = GenerationSettings(SMALL.max_new_tokens, SMALL.temperature, SMALL.top_k, None, SMALL.seed)
    generated = generate_answers(model, [i.prompt for i in rnd.items], settings)
    assert [i.answers["challenger"] for i in rnd.items] == generated
    # blind: each item shows the two answers in its own random order, and keeps it
    assert {i.order for i in rnd.items} == {("challenger", "champion"), ("champion", "challenger")}
    assert all(set(i.shown.values()) == set(i.answers.values()) for i in rnd.items)
    assert Round(rnd.dir).items == rnd.items
    other = new_round(ws, challenger[:10], champion[:10], SMALL.model_copy(update={"prompts": 12, "seed": 4}))
    assert [i.order for i in other.items] != [i.order for i in rnd.items]
    # a round is a folder with its answers and an empty vote store; nothing half-made lies around
    assert sorted(p.name for p in rnd.dir.iterdir()) == ["round.json", "votes.sqlite"]
    assert rnd.store.votes() == [] and not list((ws.root / ROUNDS_DIR).glob(".partial-*"))
    assert find_round(ws.root, rnd.id).dir == rnd.dir and find_round(ws.root, str(rnd.dir)).id == rnd.id


def test_prompts_come_from_a_jsonl_file_and_a_bad_line_is_named(models, tmp_path):
    ws, challenger, champion = models
    good = tmp_path / "prompts.jsonl"
    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    good.write_text(
        json.dumps({"prompt": "What is red?"})
        + "\n\n"
        + json.dumps({"messages": [*chat, {"role": "user", "content": "And blue?"}]})
        + "\n"
        + json.dumps({"messages": chat})  # a whole chat example: its prompt is the user turn
        + "\n"
    )
    prompts = file_prompts(good)
    assert [[m.content for m in p] for p in prompts] == [["What is red?"], ["Hi?", "Hello.", "And blue?"], ["Hi?"]]
    rnd = new_round(ws, challenger, champion, SMALL, prompts=str(good))
    assert len(rnd) == 3 and rnd.meta["prompts"]["source"] == f"file:{good}"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    before = sorted((ws.root / ROUNDS_DIR).iterdir())
    with pytest.raises(ChatDataError, match=r"bad.jsonl:2: expected"):
        new_round(ws, challenger, champion, SMALL, prompts=str(bad))
    assert sorted((ws.root / ROUNDS_DIR).iterdir()) == before  # nothing made


# ----------------------------------------------------------------------------- votes


def test_votes_from_concurrent_reviewers_are_all_kept_and_a_revote_replaces_only_ones_own(tmp_path):
    store = VoteStore.create(tmp_path / "votes.sqlite")
    order = {i: ("challenger", "champion") for i in range(25)}

    def reviewer(name: str) -> None:
        for i in range(25):
            store.record(parse_vote({"reviewer": name, "item": i, "choice": "A"}, order))

    threads = [threading.Thread(target=reviewer, args=(f"r{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.votes()) == 100
    store.record(parse_vote({"reviewer": "r0", "item": 3, "choice": "B", "better_answer": "mine"}, order))
    votes = {(v["reviewer"], v["item"]): v for v in store.votes()}
    assert len(votes) == 100 and votes["r0", 3]["preferred"] == "champion" and votes["r0", 3]["better_answer"] == "mine"
    assert all(votes[f"r{k}", 3]["preferred"] == "challenger" for k in (1, 2, 3))
    closed_at, frozen = store.close()
    assert closed_at and len(frozen) == 100
    with pytest.raises(RoundClosed):
        store.record(parse_vote({"reviewer": "late", "item": 0, "choice": "A"}, order))
    assert len(store.votes()) == 100


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ([1, 2], 400, "JSON object"),
        ({"reviewer": "ann", "item": 0}, 422, "`choice`"),
        ({"reviewer": " ", "item": 0, "choice": "A"}, 422, "`reviewer`"),
        ({"reviewer": "ann", "item": "0", "choice": "A"}, 422, "`item`"),
        ({"reviewer": "ann", "item": 7, "choice": "A"}, 404, "no item 7"),
        ({"reviewer": "ann", "item": 0, "choice": "A", "ratings": {"A": {"fluency": 6}}}, 422, "1 to 5"),
        ({"reviewer": "ann", "item": 0, "choice": "A", "ratings": {"C": {}}}, 422, "A and/or B"),
        ({"reviewer": "ann", "item": 0, "choice": "A", "extra": 1}, 422, "unknown field"),
    ],
)
def test_a_malformed_vote_is_refused_naming_the_problem(payload, status, message):
    with pytest.raises(VoteError, match=message) as e:
        parse_vote(payload, {0: ("champion", "challenger")})
    assert e.value.status == status


def test_ratings_are_stored_per_model_whatever_side_showed_it():
    row = parse_vote(
        {"reviewer": "ann", "item": 0, "choice": "A", "ratings": {"A": {"fluency": 2}, "B": {"relevance": 5}}},
        {0: ("champion", "challenger")},
    )
    assert row["preferred"] == "champion" and row["champion_fluency"] == 2 and row["challenger_relevance"] == 5
    assert row["challenger_fluency"] is None


# ----------------------------------------------------------------------------- results, gate, data


def vote(item: int, reviewer: str, preferred: str, **extra) -> dict:
    return {"item": item, "reviewer": reviewer, "preferred": preferred, "better_answer": None, **extra}


# by item: ann and bob agree on 0 (challenger), 1 (champion), 2 (tie), 4 (challenger); split on 3
KNOWN = [
    vote(0, "ann", "challenger", better_answer="A better answer, by ann."),
    vote(0, "bob", "challenger"),
    vote(1, "ann", "champion"),
    vote(1, "bob", "champion"),
    vote(2, "ann", "tie"),
    vote(2, "bob", "tie"),
    vote(3, "ann", "challenger"),
    vote(3, "bob", "champion"),
    vote(4, "ann", "challenger", challenger_fluency=4, champion_fluency=2),
    vote(4, "bob", "challenger", challenger_fluency=5),
]


def test_results_of_a_known_vote_set():
    r = round_results(6, KNOWN, seed=0)
    assert (r["items"], r["items_voted"], r["votes"], r["reviewers"]) == (6, 5, 10, {"ann": 5, "bob": 5})
    assert r["preferred"] == {"challenger": 5, "champion": 3, "tie": 2}
    assert r["win_rate"] == pytest.approx(0.6)  # items score 1, 0, .5, .5, 1
    lo, hi = r["ci"]
    assert 0 <= lo < 0.6 < hi <= 1 and round_results(6, KNOWN, seed=0)["ci"] == r["ci"]
    assert r["ratings"]["challenger"]["fluency"] == pytest.approx(4.5) and r["ratings"]["champion"]["fluency"] == 2
    assert r["ratings"]["challenger"]["coherence"] is None
    a = r["agreement"]
    assert (a["items"], a["pairs"], a["pairwise"]) == (5, 5, pytest.approx(0.8))
    # Fleiss: P = 0.8, chance .5² + .3² + .2² = .38; Cohen: observed .8, chance (3·2 + 1·2 + 1·1)/25 = .36
    assert a["fleiss_kappa"] == pytest.approx((0.8 - 0.38) / 0.62)
    assert a["cohen_kappa"] == {"ann / bob": pytest.approx((0.8 - 0.36) / 0.64)}
    assert r["written_answers"] == 1


def test_the_bootstrap_interval_is_as_wide_as_the_votes_are_uncertain():
    balanced = [vote(i, "ann", "challenger" if i % 2 else "champion") for i in range(100)]
    r = round_results(100, balanced, seed=1)
    lo, hi = r["ci"]
    assert r["win_rate"] == 0.5 and lo == pytest.approx(0.402, abs=0.03) and hi == pytest.approx(0.598, abs=0.03)
    assert round_results(3, [vote(i, "ann", "challenger") for i in range(3)])["ci"] == [1.0, 1.0]
    assert round_results(3, [])["win_rate"] is None and round_results(3, [])["ci"] is None


def test_kappa_is_undefined_where_chance_agreement_is_certain():
    assert cohen_kappa(["tie", "tie"], ["tie", "tie"]) is None
    assert fleiss_kappa([["tie", "tie"]]) is None and fleiss_kappa([["tie"]]) is None
    assert cohen_kappa(["challenger", "champion"], ["champion", "challenger"]) == pytest.approx(-1.0)


def test_the_gate_waits_for_votes_then_approves_or_rejects_with_its_evidence():
    r = round_results(6, KNOWN, seed=0)
    waiting = review_decision(r, min_votes=20)
    assert waiting.decision == "wait" and "10 of the 20" in waiting.reason
    approved = review_decision(r, min_votes=10)
    assert approved.decision == "approve" and "win rate 0.60" in approved.reason
    assert approved.evidence["ci"] == r["ci"] and approved.evidence["reviewers"] == ["ann", "bob"]
    assert approved.evidence["ratings"] == r["ratings"] and approved.evidence["votes"] == 10
    assert review_decision(r, min_votes=10, min_win_rate=0.6).decision == "reject"


def test_votes_become_pairs_and_chats_ties_and_split_votes_dropped():
    items = [
        {
            "id": i,
            "prompt": [{"role": "user", "content": f"q{i}"}],
            "answers": {"challenger": f"c{i}", "champion": f"h{i}"},
        }
        for i in range(5)
    ]
    data = review_examples({"id": "r", "items": items}, KNOWN)
    pairs = [(p.prompt[0].content, p.chosen, p.rejected) for p in data.preferences]
    assert pairs == [("q0", "c0", "h0"), ("q1", "h1", "c1"), ("q4", "c4", "h4")]
    assert dict(data.dropped) == {"ties": 1, "disagreement": 1}
    assert [[m.content for m in c.messages] for c in data.chats] == [["q0", "A better answer, by ann."]]


# ----------------------------------------------------------------------------- the page, end to end


@contextmanager
def serving(ws: Workspace, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`lmforge review serve` in a child process: (the process, its URL) once it listens."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [LMFORGE, "review", "serve", *args, "--port", "0", "--set", f"workspace={ws.root}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline, line = time.monotonic() + 120, ""
        while "http://" not in line:
            if time.monotonic() > deadline or not sel.select(timeout=deadline - time.monotonic()):
                raise AssertionError(f"the review page did not start: {line}")
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise AssertionError(f"lmforge review serve exited {proc.returncode}")
        url = line.split("http://", 1)[1].split()[0].rstrip("/")
        yield proc, f"http://{url}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.stdout.close()


def lmforge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LMFORGE, *args], capture_output=True, text=True, timeout=300)


def listening_address(port: int) -> str:
    """The local address a TCP socket listens on at `port`, from /proc/net/tcp (IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            return ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    raise AssertionError(f"nothing listens on port {port}")


# (item -> preferred, as in KNOWN), ratings of the challenger's answer, and a written answer
ANN = {0: "challenger", 1: "champion", 2: "tie", 3: "challenger", 4: "challenger"}
BOB = {0: "challenger", 1: "champion", 2: "tie", 3: "champion", 4: "challenger"}


def cast_vote(page, rnd: Round, expect, plan: dict[int, str], written: dict[int, str], key: bool) -> int:
    """Vote on the item the page shows, as `plan` says; returns the item's id."""
    position = page.locator("#position").inner_text()
    item = int(position.split(" of ")[0]) - 1
    preferred = plan[item]
    order = rnd.items[item].order
    side = "tie" if preferred == "tie" else "AB"[order.index(preferred)]
    challenger_side = "AB"[order.index("challenger")]
    if key:
        page.keyboard.press({"A": "1", "B": "2", "tie": "t"}[side])
    else:
        page.click(f"#choose-{side}")
    expect(page.locator(f"#choose-{side}")).to_have_attribute("aria-pressed", "true")
    for criterion, value in (("fluency", 4), ("coherence", 3), ("relevance", 5)):
        page.check(f'input[name="{challenger_side}-{criterion}"][value="{value}"]')
    if item in written:
        page.fill("#better", written[item])
        page.click("#save")
    elif key:
        page.keyboard.press("n")
    else:
        page.click("#save")
    expect(page.locator("#status")).to_have_text(f"Saved item {item + 1}.")
    return item


@pytest.mark.slow
@pytest.mark.server
def test_reviewers_vote_in_a_browser_and_the_closed_round_becomes_results_an_artifact_and_dpo_pairs(models, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM}: `apt-get install chromium` (./forge test installs it where apt-get can)")
    ws, challenger, champion = models
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in QUESTIONS))
    made = lmforge(
        "review",
        "new",
        "--challenger",
        challenger[:8],
        "--champion",
        champion[:8],
        "--prompts",
        str(prompts),
        "-n",
        "5",
        "--set",
        f"workspace={ws.root}",
        "--set",
        "review.max_new_tokens=12",
    )
    assert made.returncode == 0, made.stderr
    round_id = made.stdout.split("review round ", 1)[1].split(":")[0]
    rnd = find_round(ws.root, round_id)
    assert len(rnd) == 5 and f"lmforge review serve --set workspace={ws.root} {round_id}" in made.stdout
    # a model may write markup: it must show as text (the answer is patched in as a model's output)
    hostile = f'{SCRIPT}<img src=x onerror="window.__pwned = 2">'
    meta = json.loads((rnd.dir / "round.json").read_text())
    script_item = next(i for i in meta["items"] if SCRIPT in i["prompt"][0]["content"])
    script_item["answers"]["champion"] = hostile
    (rnd.dir / "round.json").write_text(json.dumps(meta))
    rnd = Round(rnd.dir)
    written = {0: "A better answer, written by ann."}

    with serving(ws) as (server, url), sync_playwright() as pw:  # no ROUND: the newest open one
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}" and listening_address(port) == "127.0.0.1"
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        errors: list[str] = []
        try:
            page = browser.new_context().new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.fill("#reviewer", "ann")
            page.click("button[type=submit]")
            expect(page.locator("#position")).to_have_text("1 of 5")
            assert cast_vote(page, rnd, expect, ANN, written, key=True) == 0
            expect(page.locator("#position")).to_have_text("2 of 5")
            assert cast_vote(page, rnd, expect, ANN, written, key=False) == 1
            page.reload()  # mid-round: the name is remembered and the page resumes at item 3
            expect(page.locator("#position")).to_have_text("3 of 5")
            expect(page.locator("#voted")).to_have_text("(2 voted)")
            for _ in range(3):
                cast_vote(page, rnd, expect, ANN, written, key=True)
            expect(page.locator("#done-text")).to_contain_text("All 5 items have your vote, ann")
            page.click("#again")  # ann's vote on item 1 comes back as she left it
            expect(page.locator("#position")).to_have_text("1 of 5")
            side = "AB"[rnd.items[0].order.index("challenger")]
            expect(page.locator(f"#choose-{side}")).to_have_attribute("aria-pressed", "true")
            expect(page.locator(f'input[name="{side}-relevance"][value="5"]')).to_be_checked()
            expect(page.locator("#better")).to_have_value(written[0])
            # the markup in the prompt and in an answer is text on the page; nothing of it ran
            shown = script_item["id"]
            for position in range(2, shown + 2):
                page.keyboard.press("s")  # skip: the next item, without voting
                expect(page.locator("#position")).to_have_text(f"{position} of 5")
            expect(page.locator("#prompt")).to_contain_text(SCRIPT)
            side = "AB"[rnd.items[shown].order.index("champion")]
            expect(page.locator(f"#text-{side}")).to_have_text(hostile)
            assert (
                page.evaluate("window.__pwned") is None
                and page.locator("#review-view script, #review-view img").count() == 0
            )

            bob = browser.new_context().new_page()  # another browser: asks for a name, starts at 1
            bob.goto(url)
            bob.fill("#reviewer", "bob")
            bob.keyboard.press("Enter")
            expect(bob.locator("#position")).to_have_text("1 of 5")
            for _ in range(5):
                cast_vote(bob, rnd, expect, BOB, {}, key=True)
            expect(bob.locator("#done-text")).to_contain_text("All 5 items")
        finally:
            browser.close()
        assert not errors

        # hostile requests: refused with a 4xx naming the problem; nothing stored
        with httpx.Client(base_url=url) as http:
            good = {"reviewer": "eve", "item": 0, "choice": "A"}
            r = http.post("/api/votes", content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
            r = http.post("/api/votes", json={**good, "item": 99})
            assert r.status_code == 404 and "no item 99" in r.json()["error"]
            r = http.post("/api/votes", json={**good, "choice": "C"})
            assert r.status_code == 422 and "`choice`" in r.json()["error"]
            assert http.post("/api/votes", data={"reviewer": "eve", "item": "0", "choice": "A"}).status_code == 415
            assert http.get("/api/items/99", params={"reviewer": "eve"}).status_code == 404
            assert http.get("/", headers={"host": "evil.example:80"}).status_code == 400  # DNS rebinding
            page_headers = http.get("/").headers
            assert "script-src 'self'" in page_headers["content-security-policy"]
        # killed outright: every acknowledged vote is on disk
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=20)

    votes = rnd.store.votes()
    assert len(votes) == 10 and {v["reviewer"] for v in votes} == {"ann", "bob"}
    for v in votes:
        assert v["preferred"] == {"ann": ANN, "bob": BOB}[v["reviewer"]][v["item"]]
        assert (v["challenger_fluency"], v["challenger_coherence"], v["challenger_relevance"]) == (4, 3, 5)
        assert v["champion_fluency"] is None
    assert [v["better_answer"] for v in votes if v["better_answer"]] == [written[0]]

    closed = lmforge("review", "close", round_id, "--set", f"workspace={ws.root}", "--set", "review.min_votes=10")
    assert closed.returncode == 0, closed.stderr
    assert "challenger win rate 0.60" in closed.stdout and "gate: approve" in closed.stdout
    fp = rnd.store.state("artifact")
    artifact = ws.artifact_dir("votes", fp)
    table = datasets.Dataset.from_file(str(artifact / "votes.arrow"))
    assert table.num_rows == 10 and set(SCHEMA.names) <= set(table.column_names)
    row = next(r for r in table if r["item"] == shown and r["reviewer"] == "ann")
    assert row["champion_answer"] == hostile and row["prompt"] == [{"role": "user", "content": QUESTIONS[0]}]
    results = json.loads((artifact / "results.json").read_text())
    assert results["win_rate"] == pytest.approx(0.6) and results["agreement"]["pairwise"] == pytest.approx(0.8)
    assert results["ci"] == round_results(5, votes, seed=rnd.meta["seed"])["ci"]
    assert ws.ref("votes", fp).manifest()["inputs"]["challenger"] == challenger
    # closed: no more votes; closing again publishes nothing new
    with pytest.raises(RoundClosed):
        rnd.store.record(parse_vote({"reviewer": "late", "item": 0, "choice": "A"}, rnd.order))
    assert lmforge("review", "close", round_id, "--set", f"workspace={ws.root}").returncode == 0
    assert rnd.store.state("artifact") == fp and len(list((ws.root / "votes").glob("[0-9a-f]*"))) == 1
    refused = lmforge("review", "serve", round_id, "--set", f"workspace={ws.root}")
    assert refused.returncode == 1 and "is closed" in refused.stderr

    out = tmp_path / "review-data"
    made = lmforge("review", "pairs", round_id, "--out", str(out), "--set", f"workspace={ws.root}")
    assert made.returncode == 0, made.stderr
    assert "3 preference pairs and 1 chat examples" in made.stdout and "1 ties, 1 without a majority" in made.stdout
    pairs = {p.prompt[0].content: (p.chosen, p.rejected) for p in read_preferences_jsonl(out / "preferences.jsonl")}
    for item_id, winner in ((0, "challenger"), (1, "champion"), (4, "challenger")):
        it = rnd.items[item_id]
        loser = "champion" if winner == "challenger" else "challenger"
        assert pairs[it.prompt[0].content] == (it.answers[winner], it.answers[loser])
    (chat,) = read_chat_jsonl(out / "chats.jsonl")
    assert [m.content for m in chat.messages] == [rnd.items[0].prompt[0].content, written[0]]


def test_the_page_is_never_served_beyond_this_machine_unless_asked(models):
    ws, _, _ = models
    refused = lmforge("review", "serve", "--host", "0.0.0.0", "--port", "0", "--set", f"workspace={ws.root}")
    assert refused.returncode == 1 and "--allow-remote" in refused.stderr
    assert refused.stderr.count("error:") == 1 and "Traceback" not in refused.stderr


def test_pairs_of_an_open_round_say_to_close_it_first(models, tmp_path):
    ws, challenger, champion = models
    rnd = new_round(ws, challenger, champion, SMALL)
    out = lmforge("review", "pairs", rnd.id, "--out", str(tmp_path / "x"), "--set", f"workspace={ws.root}")
    assert out.returncode == 1 and f"lmforge review close {rnd.id}" in out.stderr
    assert not (tmp_path / "x").exists()
