"""Which flow re-runs each stage alone, and which stage's artifact it takes as input."""

from flows.data import chunk_flow, clean_flow, crawl_flow, tokenize_flow
from flows.pretrain import pretrain_flow

STAGE_FLOWS = {
    "crawl": crawl_flow,
    "clean": clean_flow,
    "tokenize": tokenize_flow,
    "chunk": chunk_flow,
    "pretrain": pretrain_flow,
}
STAGE_INPUT = {"clean": "crawl", "tokenize": "clean", "chunk": "tokenize", "pretrain": "chunk"}
