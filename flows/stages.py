"""Which flow re-runs each stage alone, and which stage's artifact it takes as input."""

from flows.data import chunk_flow, clean_flow, crawl_flow, tokenize_flow
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.pretrain import pretrain_flow
from flows.register import register_flow

STAGE_FLOWS = {
    "crawl": crawl_flow,
    "clean": clean_flow,
    "tokenize": tokenize_flow,
    "chunk": chunk_flow,
    "pretrain": pretrain_flow,
    "finetune": finetune_flow,
    "evaluate": evaluate_flow,
    "register": register_flow,
}
# the flow parameter naming each stage's input artifact (`lmforge stage NAME --input`)
STAGE_INPUT = {
    "clean": "crawl_artifact",
    "tokenize": "clean_artifact",
    "chunk": "tokenize_artifact",
    "pretrain": "data",  # a chunk artifact
    "finetune": "base",  # a model: fingerprint, checkpoint folder or models:/ URI
    "evaluate": "model",  # a model: fingerprint or models:/ URI
    "register": "evaluation",  # an evaluate artifact
}
