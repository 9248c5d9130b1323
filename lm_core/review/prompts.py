"""Where a review round's prompts come from. A prompt is a conversation that ends with a user
turn (most often that one turn); a chat model answers it, a base model continues its text.

    heldout       a fine-tuned model's held-out chats (its `data/heldout.jsonl`), each cut after
                  its last user turn: questions like those it learned from, which it never saw
    evaluation    the prompts of the newest evaluation of a model (its `pairs/*.jsonl`), each as a
                  user message; the document passages (`heldout` set) only when nothing else is there
    a JSONL file  one object per line: `{"prompt": "..."}`, or `{"messages": [...]}` whose turns
                  after the last user turn are dropped (a whole chat example works as it is)

With no source named, a round takes the challenger's held-out chats, else the champion's, else
the newest evaluation of either. Repeated prompts are kept once.
"""

from __future__ import annotations

import json
from pathlib import Path

from lm_core.evaluate.pairs import HELDOUT
from lm_core.evaluate.sets import published_pair_sets
from lm_core.finetune.artifact import heldout_chats_file
from lm_core.finetune.data import jsonl_records, parse_messages, read_chat_jsonl
from lm_core.tokenize.chat_template import ChatDataError, Message, conversation_problem
from lm_core.workspace import ArtifactRef, Workspace

Prompt = tuple[Message, ...]
SOURCES = ("heldout", "evaluation")  # the named sources; anything else is a file


class PromptSourceError(ValueError):
    """No prompts where they were asked for; the message names the source and what to do."""


def up_to_last_user_turn(messages: Prompt, where: str) -> Prompt:
    """`messages` without the turns after its last user turn: the prompt a reply answers."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise ChatDataError(f"{where}: no user turn: nothing to answer")
    prompt = messages[: last + 1]
    problem = conversation_problem(prompt, for_training=False)
    if problem:
        raise ChatDataError(f"{where}: {problem}")
    return prompt


def file_prompts(path: str | Path) -> list[Prompt]:
    """The prompts of a JSONL file; a bad line stops the read with `ChatDataError` naming it."""
    prompts = []
    for where, record in jsonl_records(path):
        if isinstance(record, dict) and "messages" in record:
            messages = parse_messages(record["messages"], where)  # the fine-tuning reader's checks
        elif isinstance(record, dict) and isinstance(record.get("prompt"), str) and record["prompt"].strip():
            messages = (Message("user", record["prompt"]),)
        else:
            raise ChatDataError(f'{where}: expected {{"prompt": "..."}} or {{"messages": [...]}}')
        prompts.append(up_to_last_user_turn(messages, where))
    return prompts


def heldout_prompts(model: ArtifactRef) -> list[Prompt]:
    path = heldout_chats_file(model.dir)
    if path is None:
        return []
    return [up_to_last_user_turn(c.messages, c.origin) for c in read_chat_jsonl(path)]


def newest_evaluation(ws: Workspace, model: ArtifactRef) -> ArtifactRef | None:
    """The newest published evaluation of `model`."""
    for a in ws.artifacts("evaluate"):  # newest first
        if a["manifest"].get("inputs", {}).get(model.stage) == model.fingerprint:
            return ws.ref("evaluate", a["fingerprint"])
    return None


def evaluation_prompts(ws: Workspace, model: ArtifactRef) -> list[Prompt]:
    evaluation = newest_evaluation(ws, model)
    if evaluation is None:
        return []
    sets = published_pair_sets(evaluation.dir)
    if len(sets) > 1:
        sets.pop(HELDOUT, None)  # document passages read oddly as questions: only when alone
    return [(Message("user", p.prompt),) for pairs in sets.values() for p in pairs if p.prompt.strip()]


def find_prompts(
    ws: Workspace, source: str | None, challenger: ArtifactRef, champion: ArtifactRef
) -> tuple[str, list[Prompt]]:
    """(where they came from, the prompts, each once) for a round between two models."""
    tried = []
    if source in (None, "heldout"):
        for model in (challenger, champion):
            if found := heldout_prompts(model):
                return f"heldout:{model.stage}/{model.fingerprint}", _unique(found)
            tried.append(f"{model.stage}/{model.fingerprint[:12]} has no held-out chats")
    if source in (None, "evaluation"):
        for model in (challenger, champion):
            if found := evaluation_prompts(ws, model):
                return f"evaluation:{model.stage}/{model.fingerprint}", _unique(found)
            tried.append(f"{model.stage}/{model.fingerprint[:12]} has no evaluation with prompts")
    if source is None or source in SOURCES:
        raise PromptSourceError(
            f"no prompts for the round: {'; '.join(tried)}. Give a JSONL file of "
            '{"prompt": ...} or {"messages": [...]} lines (--prompts FILE)'
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise PromptSourceError(f"--prompts {source}: no such file (or: heldout, evaluation)")
    return f"file:{path.resolve()}", _unique(file_prompts(path))


def _unique(prompts: list[Prompt]) -> list[Prompt]:
    seen, out = set(), []
    for p in prompts:
        key = json.dumps([m.to_dict() for m in p])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
