"""The chat template: how a conversation becomes token ids, shared by fine-tuning, evaluation,
`lmforge chat` and serving, so that the model is prompted exactly the way it was trained. It
lives beside the tokenizer, which reserves its role tokens (`bpe.SPECIAL_TOKENS`).

Each message renders as

    <role token> + encode(content) + <|end|>

and a conversation as the concatenation of its messages. A generation prompt is the rendered
history followed by `<|assistant|>`; the model's reply ends at `<|end|>` (or `<|endoftext|>`).

Role tokens enter a sequence only as ids, never through text: content is encoded with special-
token strings treated as plain text, so a user who types "<|assistant|>" gets the characters,
not a forged turn. The template keeps its own copy of the tokenizer with that setting forced on,
whatever the caller's tokenizer was loaded with.

The loss mask marks the tokens the model must learn to produce: the content of assistant turns
and the `<|end|>` that closes each of them (so it learns to stop). Role tokens and everything in
system and user turns are context only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tokenizers import Tokenizer

CHAT_TEMPLATE = "lmforge-chat-v1"  # this template's name, in a chat model's chat.json
ROLES = ("system", "user", "assistant")
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
END = "<|end|>"
END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"

# The same template in Jinja, for `transformers`' `apply_chat_template` (an exported chat model
# carries it in tokenizer_config.json). The role tokens are rendered as text, which the exported
# tokenizer splits out as their ids before it encodes what lies between them, so each content is
# encoded on its own, as above, and the ids are the same. One difference is left: a content that
# holds a role token's string becomes that token there, where lmforge encodes it as plain text.
JINJA_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown role ' + message['role'] + ': expected system, user or assistant') -}}"
    "{%- elif message['role'] == 'system' and not loop.first -%}"
    "{{- raise_exception('a system message may only come first') -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>' + message['content'] + '" + END + "' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + ROLE_TOKENS["assistant"] + "' -}}{%- endif -%}"
)


class ChatDataError(ValueError):
    """Fine-tuning data or a tokenizer that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    """Messages in order, and where they came from (`file:line`, a dataset row, a document)."""

    messages: tuple[Message, ...]
    origin: str = ""

    @classmethod
    def of(cls, *pairs: tuple[str, str], origin: str = "") -> Conversation:
        """`Conversation.of(("user", "hi"), ("assistant", "hello"))`."""
        return cls(tuple(Message(r, c) for r, c in pairs), origin)

    def to_dict(self) -> dict:
        return {"messages": [m.to_dict() for m in self.messages]}


Messages = Conversation | Sequence[Message]


def _messages(conv: Messages) -> Sequence[Message]:
    return conv.messages if isinstance(conv, Conversation) else conv


def conversation_problem(messages: Sequence[Message], *, for_training: bool = True) -> str | None:
    """What makes `messages` unusable, or None. Training data must hold an assistant turn and
    end with one (the last reply is what is learned); a prompt for generation need not."""
    if not messages:
        return "the conversation has no messages"
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            return f"messages[{i}]: unknown role {m.role!r} (expected one of {', '.join(ROLES)})"
        if not isinstance(m.content, str):
            return f"messages[{i}]: content must be a string, is {type(m.content).__name__}"
        if not m.content.strip():
            return f"messages[{i}] ({m.role}): empty content"
        try:
            m.content.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate, from a "\ud800" escape in JSON
            return f"messages[{i}] ({m.role}): not valid Unicode ({e.reason} at character {e.start})"
        if m.role == "system" and i > 0:
            return f"messages[{i}]: a system message may only come first"
    if for_training:
        if not any(m.role == "assistant" for m in messages):
            return "the conversation has no assistant turn: nothing to learn"
        if messages[-1].role != "assistant":
            return f"the last message is from {messages[-1].role}, not assistant: its reply is missing"
    return None


@dataclass(frozen=True)
class RenderedChat:
    """Token ids of a rendered conversation and, per token, 1 if the model must learn to
    produce it. `truncated` counts the tokens cut off the end to fit `max_len` (0: whole)."""

    ids: list[int]
    loss_mask: list[int]
    truncated: int = 0
    origin: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_targets(self) -> int:
        return sum(self.loss_mask)


@dataclass
class RenderedSet:
    """`render_all`'s result: the usable chats, and what the length limit cost."""

    chats: list[RenderedChat] = field(default_factory=list)
    truncated: int = 0  # chats cut short (still used)
    dropped: list[str] = field(default_factory=list)  # origins of chats left with nothing to learn

    @property
    def target_tokens(self) -> int:
        return sum(c.n_targets for c in self.chats)


class ChatTemplate:
    """Renders conversations with one tokenizer's role-token ids (see the module's docstring)."""

    def __init__(self, tokenizer: Tokenizer):
        ids = {t: tokenizer.token_to_id(t) for t in (*ROLE_TOKENS.values(), END, END_OF_TEXT, PAD)}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ChatDataError(
                f"the tokenizer lacks the chat tokens {', '.join(missing)}: it was not trained by lmforge "
                "(which reserves them) and cannot render conversations; retrain it or fine-tune a model whose "
                "tokenizer has them"
            )
        # A private copy: the caller's tokenizer may parse special strings (load_tokenizer's
        # parse_special_tokens=True); ours never does, and the caller's is left as it was.
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self.tokenizer.encode_special_tokens = True
        self.role_ids = {role: ids[tok] for role, tok in ROLE_TOKENS.items()}
        self.end_id, self.eot_id, self.pad_id = ids[END], ids[END_OF_TEXT], ids[PAD]
        self.special_ids = frozenset(ids.values())
        forged = set(self.encode(" ".join(ids))) & self.special_ids
        if forged:  # a tokenizers version that ignores encode_special_tokens would end up here
            raise ChatDataError("the tokenizer turns special-token strings in text into special ids: unsafe for chat")

    @property
    def stop_ids(self) -> tuple[int, int]:
        """Generation stops at the first of these: the end of the reply, or of the text."""
        return (self.end_id, self.eot_id)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def _segments(self, messages: Sequence[Message], contents: list[list[int]], last_turn_only: bool):
        """(ids, mask) per message, mask set on assistant content and its <|end|>."""
        last = len(messages) - 1
        for i, (m, content) in enumerate(zip(messages, contents, strict=True)):
            learn = m.role == "assistant" and (not last_turn_only or i == last)
            yield [self.role_ids[m.role], *content, self.end_id], [0] + [int(learn)] * (len(content) + 1)

    def render(self, conv: Messages, max_len: int | None = None, *, last_turn_only: bool = False) -> RenderedChat:
        """The conversation's ids and loss mask. `last_turn_only` learns only the final reply
        (preference pairs, whose earlier assistant turns are context). Longer than `max_len`:
        the beginning is kept (system prompt and first turns) and `truncated` says how much went."""
        messages = self._checked(conv)
        contents = self._encode_many([m.content for m in messages])
        return self._render(messages, contents, max_len, last_turn_only, getattr(conv, "origin", ""))

    def _checked(self, conv: Messages) -> Sequence[Message]:
        messages = _messages(conv)
        problem = conversation_problem(messages, for_training=False)
        if problem:
            raise ChatDataError(f"{getattr(conv, 'origin', '') or 'conversation'}: {problem}")
        return messages

    def _render(self, messages, contents, max_len: int | None, last_turn_only: bool, origin: str) -> RenderedChat:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be at least 1, is {max_len}")
        ids: list[int] = []
        mask: list[int] = []
        for seg_ids, seg_mask in self._segments(messages, contents, last_turn_only):
            ids += seg_ids
            mask += seg_mask
        cut = 0
        if max_len is not None and len(ids) > max_len:
            cut = len(ids) - max_len
            ids, mask = ids[:max_len], mask[:max_len]
        return RenderedChat(ids, mask, cut, origin)

    def render_reply(self, prompt: Messages, reply: str, max_len: int | None = None) -> RenderedChat:
        """`prompt` followed by the assistant turn `reply`, learning only `reply` (+ <|end|>):
        a preference pair's chosen or rejected side."""
        messages = [*_messages(prompt), Message("assistant", reply)]
        rendered = self.render(messages, max_len, last_turn_only=True)
        return RenderedChat(rendered.ids, rendered.loss_mask, rendered.truncated, getattr(prompt, "origin", ""))

    def render_all(self, convs: Iterable[Conversation], max_len: int) -> RenderedSet:
        """Render many chats (their contents encoded in one threaded batch). A chat cut so short
        that none of its assistant tokens is left teaches nothing: it is dropped and named."""
        convs = [(conv, self._checked(conv)) for conv in convs]  # every chat checked before any work
        encoded = iter(self._encode_many([m.content for _, messages in convs for m in messages]))
        out = RenderedSet()
        for conv, messages in convs:
            contents = [next(encoded) for _ in messages]
            rendered = self._render(messages, contents, max_len, False, conv.origin)
            if rendered.n_targets == 0:
                out.dropped.append(conv.origin or f"conversation {len(out.chats) + len(out.dropped)}")
                continue
            out.truncated += rendered.truncated > 0
            out.chats.append(rendered)
        return out

    def prompt_ids(self, conv: Messages, max_len: int | None = None) -> list[int]:
        """Ids that ask the model for the next assistant turn: the history + `<|assistant|>`.
        Longer than `max_len`: the oldest turns after the system prompt go first, whole; if the
        last turn alone is still too long, only its end is kept (the model sees the latest text)."""
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be at least 1, is {max_len}")
        messages = list(self._checked(conv))
        contents = self._encode_many([m.content for m in messages])
        segments = [ids for ids, _ in self._segments(messages, contents, False)]
        tail = [self.role_ids["assistant"]]
        if max_len is None:
            return [t for s in segments for t in s] + tail
        keep_first = 1 if messages[0].role == "system" else 0
        head = segments[:keep_first]
        rest = segments[keep_first:]
        budget = max_len - len(tail) - sum(map(len, head))
        while len(rest) > 1 and sum(map(len, rest)) > budget:
            rest.pop(0)
        ids = [t for s in head + rest for t in s] + tail
        return ids[-max_len:]

    def decode_reply(self, ids: Sequence[int]) -> str:
        """A generated reply's text: up to the first stop id, special tokens left out."""
        stop = next((i for i, t in enumerate(ids) if t in self.stop_ids), len(ids))
        return self.tokenizer.decode(list(ids[:stop]), skip_special_tokens=True)
