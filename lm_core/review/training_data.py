"""A closed round's votes as fine-tuning data: what people preferred becomes DPO pairs, what they
wrote becomes chat examples.

    preferences.jsonl   {"prompt", "chosen", "rejected"}: `finetune.preference_files` (method dpo)
    chats.jsonl         {"messages": [..., {"role": "assistant", "content": <written answer>}]}:
                        `finetune.chat_files` (method sft)

One pair per item, by majority: the answer more than half of the item's reviewers preferred is
`chosen`, the other `rejected`. Dropped, and counted:

    ties          the majority found the answers equally good: a pair would teach nothing
    disagreement  no choice has more than half of the votes (one for A, one for B, say): people
                  do not agree which is better, so neither is a safe target
    unusable      both answers are the same text, or the preferred one is empty

Every written answer becomes a chat example (the prompt, then the answer), whatever the vote;
the same text written twice for an item is kept once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lm_core.finetune.data import PreferenceExample, write_chat_jsonl, write_preferences_jsonl
from lm_core.review.results import read_closed
from lm_core.tokenize.chat_template import Conversation, Message, conversation_problem

PREFERENCES_FILE = "preferences.jsonl"
CHATS_FILE = "chats.jsonl"


@dataclass
class ReviewData:
    preferences: list[PreferenceExample] = field(default_factory=list)
    chats: list[Conversation] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # ties, disagreement, unusable, bad_written


def review_examples(meta: dict[str, Any], votes: list[dict[str, Any]]) -> ReviewData:
    """The pairs and chats a round's votes make (see the module docstring)."""
    items = {i["id"]: i for i in meta["items"]}
    by_item: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for v in votes:
        by_item[v["item"]].append(v)
    out = ReviewData()
    for item_id, vs in sorted(by_item.items()):
        item = items[item_id]
        prompt = tuple(Message(m["role"], m["content"]) for m in item["prompt"])
        where = f"round {meta['id']} item {item_id}"
        label, n = Counter(v["preferred"] for v in vs).most_common(1)[0]
        if n * 2 <= len(vs):
            out.dropped["disagreement"] += 1
        elif label == "tie":
            out.dropped["ties"] += 1
        else:
            other = "champion" if label == "challenger" else "challenger"
            chosen, rejected = item["answers"][label], item["answers"][other]
            if not chosen.strip() or chosen == rejected:
                out.dropped["unusable"] += 1
            else:
                out.preferences.append(PreferenceExample(prompt, chosen, rejected, where))
        written = dict.fromkeys(v["better_answer"] for v in vs if v.get("better_answer"))
        for text in written:
            messages = (*prompt, Message("assistant", text))
            if conversation_problem(messages, for_training=True):
                out.dropped["bad_written"] += 1
            else:
                out.chats.append(Conversation(messages, where))
    return out


def write_training_data(artifact_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write a closed round's pairs and chats into `out_dir` (a file only where there is
    something to write); returns the counts and the files written."""
    meta, votes, _ = read_closed(artifact_dir)
    data = review_examples(meta, votes)
    out = Path(out_dir)
    written = {}
    if data.preferences:
        write_preferences_jsonl(out / PREFERENCES_FILE, data.preferences)
        written["preference_file"] = str(out / PREFERENCES_FILE)
    if data.chats:
        write_chat_jsonl(out / CHATS_FILE, data.chats)
        written["chat_file"] = str(out / CHATS_FILE)
    return {
        "items_voted": len({v["item"] for v in votes}),
        "pairs": len(data.preferences),
        "chats": len(data.chats),
        "dropped": {k: data.dropped.get(k, 0) for k in ("ties", "disagreement", "unusable", "bad_written")},
        **written,
    }
