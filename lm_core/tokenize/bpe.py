"""A GPT-4-style byte-level BPE tokenizer (Hugging Face `tokenizers`): train one, or load one.

The pipeline follows nanochat's: no normalizer (text is encoded exactly as it is), a regex
split into words, digits, punctuation runs and whitespace, then byte-level mapping, so the
256 byte symbols are the initial alphabet and *any* Unicode text encodes and decodes back
exactly. Special tokens are reserved now, at fixed ids 0..5, for fine-tuning later.

A literal "<|endoftext|>" typed in a document is ordinary text: the tokenizers returned here
encode special-token strings as plain bytes, and special tokens enter a sequence only by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS: tuple[str, ...] = (END_OF_TEXT, "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")

# GPT-4's (cl100k) split pattern, with numbers split into runs of at most two digits rather
# than three, as nanochat does: fewer number tokens waste less of a small vocabulary.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)


class TokenizerError(ValueError):
    """A tokenizer that cannot be used; the message names the file and what is wrong."""


def _untrained() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train on `texts` (streamed: any iterable of strings). A small corpus may yield fewer than
    `vocab_size` tokens: the trainer stops when no pair of tokens is left to merge."""
    tok = _untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),  # added first: ids 0..5
    )
    tok.train_from_iterator(iter(texts), trainer=trainer)
    _check(tok, "the trained tokenizer")
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path: str | Path, *, parse_special_tokens: bool = False) -> Tokenizer:
    """Load a `tokenizer.json`, checking that it can encode any text and holds the special tokens.

    By default a special token's string in the text is encoded as ordinary text (corpus text);
    pass `parse_special_tokens=True` to turn such strings into the special ids (chat templates).
    """
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file {path} does not exist")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"tokenizer file {path} cannot be read as a Hugging Face tokenizer.json: {e}") from None
    _check(tok, f"tokenizer file {path}")
    tok.encode_special_tokens = not parse_special_tokens
    return tok


def _check(tok: Tokenizer, what: str) -> None:
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise TokenizerError(
            f"{what} lacks the special tokens {', '.join(missing)} (lmforge reserves {', '.join(SPECIAL_TOKENS)})"
        )
    not_special = [t for t, added in _added_tokens(tok).items() if t in SPECIAL_TOKENS and not added]
    if not_special:
        raise TokenizerError(f"{what} has {', '.join(not_special)} as ordinary tokens, not special ones")
    # Without every byte symbol in the vocabulary some text would encode to nothing, silently.
    vocab = tok.get_vocab(with_added_tokens=False)
    lacking = [c for c in pre_tokenizers.ByteLevel.alphabet() if c not in vocab]
    if lacking:
        raise TokenizerError(
            f"{what} is not a byte-level BPE covering all 256 bytes ({len(lacking)} byte symbols missing): "
            "some text could not be encoded"
        )


def _added_tokens(tok: Tokenizer) -> dict[str, bool]:
    """Added tokens by content -> whether they are marked special."""
    return {t.content: t.special for t in tok.get_added_tokens_decoder().values()}


def special_token_ids(tok: Tokenizer) -> dict[str, int]:
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


def vocab_size(tok: Tokenizer) -> int:
    """Every id the tokenizer can produce, special tokens included."""
    return tok.get_vocab_size(with_added_tokens=True)


def capped(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """`texts`, stopping after `max_chars` characters (the last one cut short if need be)."""
    left = max_chars
    for text in texts:
        if left <= 0:
            return
        if len(text) > left:
            text = text[:left]
        left -= len(text)
        yield text
