"""The review page: one small static page and a JSON API over a review round (Starlette, uvicorn).

    GET  /                              the page (review.js and review.css beside it)
    GET  /api/round                     the round's id, its number of items, whether it is closed
    GET  /api/progress?reviewer=NAME    how many items NAME voted on, and the first still to vote
    GET  /api/items/ID?reviewer=NAME    an item: its prompt, the answers as A and B, NAME's vote
    POST /api/votes                     a vote (JSON): stored before the answer is sent

The page puts prompts and answers in the document with `textContent` only: they are untrusted
text (a model may write `<script>`), never markup. Its Content-Security-Policy allows no script
but review.js, so markup that got in anyway could not run. A vote must be sent as JSON (which a
form on another site cannot do without the browser asking first); a malformed one is answered
with 400 or 422, one for an unknown item with 404, one for a closed round with 409, each with
`{"error": "..."}` naming the problem. The server listens on 127.0.0.1 and answers only requests
addressed to it there, unless told to serve beyond this machine (`allow_remote`).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lm_core.review.round import Round
from lm_core.review.votes import CRITERIA, VoteError, parse_vote, reviewer_name

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 64 * 1024  # a vote with the longest written answer fits many times over
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ReviewServerError(RuntimeError):
    """The page cannot be served where asked; the message names the address and the fix."""


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=SECURITY_HEADERS)


def _json(body: Any) -> JSONResponse:
    return JSONResponse(body, headers=SECURITY_HEADERS)


def review_app(rnd: Round, allowed_hosts: list[str] | None = None) -> Starlette:
    """The page and API over `rnd`; `allowed_hosts`: the Host headers answered (None: any)."""
    order = rnd.order

    def next_unvoted(voted: set[int], after: int = -1) -> int | None:
        ids = [i.id for i in rnd.items]
        later = [i for i in ids if i > after and i not in voted] + [i for i in ids if i <= after and i not in voted]
        return later[0] if later else None

    def reviewer_of(request: Request) -> str:
        return reviewer_name(request.query_params.get("reviewer"))

    def static(body: str, media_type: str):
        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=f"{media_type}; charset=utf-8", headers=SECURITY_HEADERS)

        return endpoint

    async def round_info(request: Request) -> Response:
        closed = await run_in_threadpool(lambda: rnd.closed_at)
        return _json({"id": rnd.id, "items": len(rnd), "closed": bool(closed), "criteria": list(CRITERIA)})

    async def progress(request: Request) -> Response:
        try:
            reviewer = reviewer_of(request)
        except VoteError as e:
            return _error(str(e), 400)
        voted = {v["item"] for v in await run_in_threadpool(rnd.store.votes, reviewer)}
        return _json({"total": len(rnd), "done": len(voted), "next": next_unvoted(voted)})

    async def item(request: Request) -> Response:
        try:
            reviewer = reviewer_of(request)
            item_id = int(request.path_params["item"])
        except VoteError as e:
            return _error(str(e), 400)
        except ValueError:
            return _error(f"{request.path_params['item']!r} is not an item number", 400)
        if item_id not in order:
            return _error(f"no item {item_id} in this round (items 0 to {len(rnd) - 1})", 404)
        mine = {v["item"]: v for v in await run_in_threadpool(rnd.store.votes, reviewer)}
        it = rnd.items[item_id]
        return _json(
            {
                "item": item_id,
                "position": item_id + 1,
                "total": len(rnd),
                "done": len(mine),
                "prompt": [m.to_dict() for m in it.prompt],
                "answers": it.shown,
                "vote": _as_shown(mine[item_id], it.order) if item_id in mine else None,
            }
        )

    async def vote(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error("send the vote as JSON (Content-Type: application/json)", 415)
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error(f"a vote is at most {MAX_BODY} bytes", 413)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            return _error(f"not valid JSON: {e}", 400)
        try:
            row = parse_vote(payload, order)
            await run_in_threadpool(rnd.store.record, row)
        except VoteError as e:
            return _error(str(e), e.status)
        voted = {v["item"] for v in await run_in_threadpool(rnd.store.votes, row["reviewer"])}
        return _json(
            {"saved": row["item"], "total": len(rnd), "done": len(voted), "next": next_unvoted(voted, row["item"])}
        )

    routes = [
        Route("/", static(PAGE, "text/html"), methods=["GET"]),
        Route("/review.js", static(SCRIPT, "text/javascript"), methods=["GET"]),
        Route("/review.css", static(STYLE, "text/css"), methods=["GET"]),
        Route("/api/round", round_info, methods=["GET"]),
        Route("/api/progress", progress, methods=["GET"]),
        Route("/api/items/{item:str}", item, methods=["GET"]),
        Route("/api/votes", vote, methods=["POST"]),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(f"no such page: {request.url.path}", 404)

    async def wrong_method(request: Request, exc: Exception) -> Response:
        return _error(f"{request.method} is not allowed on {request.url.path}", 405)

    handlers = {404: not_found, 405: wrong_method}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


def _as_shown(row: dict[str, Any], order: tuple[str, str]) -> dict[str, Any]:
    """A stored vote as the page shows it: ratings per side (A, B) rather than per model."""
    sides = dict(zip(("A", "B"), order, strict=True))
    return {
        "choice": row["choice"],
        "ratings": {side: {c: row[f"{model}_{c}"] for c in CRITERIA} for side, model in sides.items()},
        "better_answer": row["better_answer"],
    }


def listen(host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False) -> socket.socket:
    """A listening socket for the page: on this machine only, unless `allow_remote` (the page
    takes votes from anyone who reaches it). Port 0: any free one (`getsockname()` says which)."""
    if host not in LOOPBACK and not allow_remote:
        raise ReviewServerError(
            f"refusing to serve the review page on {host}: anyone who reaches it could vote. "
            "Keep the default 127.0.0.1, or pass --allow-remote to serve beyond this machine"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ReviewServerError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    return sock


def serve_round(rnd: Round, sock: socket.socket, allow_remote: bool = False) -> None:
    """Serve the page on `sock` (from `listen`) until Ctrl-C or SIGTERM. On loopback, only
    requests addressed to this machine are answered (a guard against DNS rebinding)."""
    local = not allow_remote and sock.family == socket.AF_INET
    app = review_app(rnd, allowed_hosts=["127.0.0.1", "localhost"] if local else None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


# ----------------------------------------------------------------------------- the page

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lmforge review</title>
<link rel="stylesheet" href="review.css">
<script src="review.js" defer></script>
</head>
<body>
<header>
  <h1>lmforge review</h1>
  <span id="round"></span>
  <span class="grow"></span>
  <span id="who"></span>
  <button id="rename" type="button" hidden>change name</button>
</header>

<section id="name-view" hidden>
  <form id="name-form">
    <label>Your name (saved in this browser; it marks your votes)
      <input id="reviewer" maxlength="64" required autocomplete="name"></label>
    <button type="submit">Start reviewing</button>
  </form>
</section>

<main id="review-view" hidden>
  <p class="progress"><strong id="position"></strong> <span id="voted"></span></p>
  <div id="prompt" class="prompt"></div>
  <div class="answers">
    <article class="answer" id="answer-A">
      <h2>A</h2>
      <div class="text" id="text-A"></div>
      <div class="ratings" id="ratings-A"></div>
    </article>
    <article class="answer" id="answer-B">
      <h2>B</h2>
      <div class="text" id="text-B"></div>
      <div class="ratings" id="ratings-B"></div>
    </article>
  </div>
  <div class="choices">
    <button type="button" data-choice="A" id="choose-A">A is better <kbd>1</kbd> <kbd>a</kbd></button>
    <button type="button" data-choice="tie" id="choose-tie">Tie <kbd>3</kbd> <kbd>t</kbd></button>
    <button type="button" data-choice="B" id="choose-B">B is better <kbd>2</kbd> <kbd>b</kbd></button>
  </div>
  <label class="better">A better answer (optional: it becomes training data)
    <textarea id="better" rows="4" maxlength="20000"></textarea></label>
  <div class="nav">
    <button type="button" id="prev">Previous <kbd>p</kbd></button>
    <button type="button" id="skip">Skip <kbd>s</kbd></button>
    <button type="button" id="save" class="primary">Save and next <kbd>n</kbd></button>
  </div>
  <p id="status" role="status"></p>
</main>

<section id="done-view" hidden>
  <p id="done-text"></p>
  <button type="button" id="again">Go over my votes from the first item</button>
</section>
</body>
</html>
"""

SCRIPT = r"""
"use strict";
// Untrusted text (prompts, answers, names) only ever goes in through textContent.
const KEY = "lmforge-review-reviewer";
const SIDES = ["A", "B"];
let criteria = ["fluency", "coherence", "relevance"];
let reviewer = localStorage.getItem(KEY);
let current = null;
let total = 0;
let choice = null;

const $ = (id) => document.getElementById(id);
const who = () => encodeURIComponent(reviewer);

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function say(text, bad) {
  $("status").textContent = text;
  $("status").className = bad ? "bad" : "";
}

function view(name) {
  for (const v of ["name-view", "review-view", "done-view"]) $(v).hidden = v !== name;
}

function buildRatings() {
  for (const side of SIDES) {
    const box = $(`ratings-${side}`);
    box.replaceChildren();
    for (const c of criteria) {
      const row = document.createElement("div");
      row.className = "rating";
      const name = document.createElement("span");
      name.textContent = c;
      row.append(name);
      for (let v = 1; v <= 5; v++) {
        const label = document.createElement("label");
        const input = document.createElement("input");
        input.type = "radio";
        input.name = `${side}-${c}`;
        input.value = String(v);
        label.append(input, String(v));
        row.append(label);
      }
      box.append(row);
    }
  }
}

function setChoice(c) {
  choice = c;
  for (const b of document.querySelectorAll("[data-choice]")) {
    b.setAttribute("aria-pressed", String(b.dataset.choice === c));
  }
}

function ratings() {
  const out = {};
  for (const side of SIDES) {
    out[side] = {};
    for (const c of criteria) {
      const checked = document.querySelector(`input[name="${side}-${c}"]:checked`);
      out[side][c] = checked ? Number(checked.value) : null;
    }
  }
  return out;
}

function turn(message) {
  const div = document.createElement("div");
  div.className = `turn ${message.role}`;
  const role = document.createElement("strong");
  role.textContent = message.role;
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = message.content;
  div.append(role, text);
  return div;
}

async function show(id) {
  const d = await api(`api/items/${id}?reviewer=${who()}`);
  current = d.item;
  total = d.total;
  $("position").textContent = `${d.position} of ${d.total}`;
  $("voted").textContent = `(${d.done} voted)`;
  $("prompt").replaceChildren(...d.prompt.map(turn));
  for (const side of SIDES) $(`text-${side}`).textContent = d.answers[side];
  setChoice(null);
  for (const input of document.querySelectorAll(".ratings input")) input.checked = false;
  $("better").value = "";
  if (d.vote) {
    setChoice(d.vote.choice);
    for (const side of SIDES) {
      for (const c of criteria) {
        const v = d.vote.ratings[side][c];
        if (v !== null) document.querySelector(`input[name="${side}-${c}"][value="${v}"]`).checked = true;
      }
    }
    $("better").value = d.vote.better_answer || "";
  }
  view("review-view");
  window.scrollTo(0, 0);
}

function done(p) {
  current = null;
  $("done-text").textContent = `All ${p.total} items have your vote, ${reviewer}. Thank you!`;
  view("done-view");
}

async function save() {
  if (current === null) return;
  if (choice === null) {
    say("Pick A, B or tie first (1, 2, 3).", true);
    return;
  }
  const body = {reviewer, item: current, choice, ratings: ratings(), better_answer: $("better").value || null};
  let r;
  try {
    r = await api("api/votes", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    });
  } catch (e) {
    say(`Not saved: ${e.message}`, true);
    return;
  }
  try {
    if (r.next === null) done(r);
    else await show(r.next);
    say(`Saved item ${r.saved + 1}.`);  // once the next item is shown
  } catch (e) {
    say(`Saved item ${r.saved + 1}, but the next one did not load: ${e.message}`, true);
  }
}

async function start() {
  $("who").textContent = reviewer;
  $("rename").hidden = false;
  try {
    const p = await api(`api/progress?reviewer=${who()}`);
    if (p.next === null) done(p);
    else await show(p.next);
  } catch (e) {
    view("review-view");
    say(e.message, true);
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  try {
    const info = await api("api/round");
    criteria = info.criteria;
    $("round").textContent = `round ${info.id}, ${info.items} items${info.closed ? " (closed)" : ""}`;
  } catch (e) {
    say(e.message, true);
  }
  buildRatings();
  $("name-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("reviewer").value.trim();
    if (!name) return;
    reviewer = name;
    localStorage.setItem(KEY, name);
    start();
  });
  $("rename").addEventListener("click", () => {
    $("reviewer").value = reviewer || "";
    view("name-view");
    $("reviewer").focus();
  });
  for (const b of document.querySelectorAll("[data-choice]")) {
    b.addEventListener("click", () => setChoice(b.dataset.choice));
  }
  $("save").addEventListener("click", save);
  $("prev").addEventListener("click", () => current > 0 && show(current - 1));
  $("skip").addEventListener("click", () => show((current + 1) % total));
  $("again").addEventListener("click", () => show(0));
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "TEXTAREA"].includes(event.target.tagName) && event.target.type !== "radio";
    if (typing || event.ctrlKey || event.metaKey || event.altKey || $("review-view").hidden) return;
    const keys = {"1": "A", "a": "A", "2": "B", "b": "B", "3": "tie", "t": "tie"};
    if (event.key in keys) setChoice(keys[event.key]);
    else if (event.key === "n") save();
    else if (event.key === "p" && current > 0) show(current - 1);
    else if (event.key === "s") show((current + 1) % total);
    else return;
    event.preventDefault();
  });
  if (reviewer) start();
  else view("name-view");
});
"""

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #f6f6f4; }
header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1.2em; background: #23395b; color: #fff; }
header h1 { font-size: 1.1em; margin: 0; }
header .grow { flex: 1; }
main, section { max-width: 1200px; margin: 1em auto; padding: 0 1.2em; }
.progress { font-size: 1.1em; margin: .3em 0; }
.prompt { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: .6em .9em; }
.turn { margin: .3em 0; }
.turn strong { color: #666; font-size: .8em; text-transform: uppercase; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; }
.answers { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; margin: 1em 0; }
.answer { background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: .6em .9em; }
.answer h2 { margin: 0 0 .3em; font-size: 1.1em; }
.answer .text { min-height: 4em; border-bottom: 1px solid #eee; padding-bottom: .6em; }
.rating { display: flex; gap: .7em; align-items: center; margin: .3em 0; }
.rating span { width: 6.5em; color: #555; }
.choices, .nav { display: flex; gap: 1em; justify-content: center; margin: 1em 0; }
button { font: inherit; padding: .45em 1em; border: 1px solid #888; border-radius: 5px; background: #fff; }
button { cursor: pointer; }
button[aria-pressed="true"] { background: #23395b; color: #fff; border-color: #23395b; }
button.primary { background: #2f7d32; color: #fff; border-color: #2f7d32; }
kbd { font-size: .75em; border: 1px solid #aaa; border-radius: 3px; padding: 0 .3em; opacity: .8; }
.better { display: block; margin: 1em 0; }
.better textarea { display: block; width: 100%; box-sizing: border-box; font: inherit; margin-top: .3em; }
#status { text-align: center; min-height: 1.4em; }
#status.bad { color: #b00020; }
@media (max-width: 700px) { .answers { grid-template-columns: 1fr; } }
"""
