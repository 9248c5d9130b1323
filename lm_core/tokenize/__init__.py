"""Tokenize: train (or reuse) a byte-level BPE tokenizer and encode every clean document.

bpe.py            the tokenizer: train one, load one, its special tokens
chat_template.py  how a conversation becomes token ids (fine-tuning, evaluation, chat, serving)
encode.py         one clean shard -> one token shard
stage.py          the `tokenize` artifact: fingerprint, tokenizer reuse, the shards

from lm_core.tokenize.stage import run_tokenize
"""
