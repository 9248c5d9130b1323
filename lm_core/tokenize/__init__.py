"""Tokenize: train (or reuse) a byte-level BPE tokenizer and encode every clean document."""

from lm_core.tokenize.bpe import (
    END_OF_TEXT,
    SPECIAL_TOKENS,
    TokenizerError,
    load_tokenizer,
    special_token_ids,
    train_tokenizer,
    vocab_size,
)
from lm_core.tokenize.stage import (
    CODE_VERSION,
    TOKENIZER_FILE,
    TOKENS_DIR,
    EmptyCorpusError,
    run_tokenize,
    tokenize_fingerprint,
)

__all__ = [
    "CODE_VERSION",
    "END_OF_TEXT",
    "SPECIAL_TOKENS",
    "TOKENIZER_FILE",
    "TOKENS_DIR",
    "EmptyCorpusError",
    "TokenizerError",
    "load_tokenizer",
    "run_tokenize",
    "special_token_ids",
    "tokenize_fingerprint",
    "train_tokenizer",
    "vocab_size",
]
