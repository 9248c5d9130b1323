"""What the registry says of a model in words: the descriptions MLflow shows on a registered
model and on each of its versions (what the model is, what it learned from). The version's
scores and the gate's reason follow in `register.py`."""

from __future__ import annotations

import json

from lm_core.model_folder import CONFIG
from lm_core.workspace import ArtifactError, ArtifactRef, Workspace, read_manifest

_CHATS = {"qa": "question/answer chats built from its base model's corpus", "files": "chats given in the config"}


def describe_model(ws: Workspace, model: ArtifactRef, chunk: ArtifactRef) -> str:
    """Two paragraphs: the model (its shape, size, training), then its data."""
    s = model.stats
    params = f"{s['params']:,} parameters" if "params" in s else "size unknown"
    shape = _shape(model)
    if model.stage == "finetune":
        examples = "preference pairs" if s.get("method") == "dpo" else _CHATS.get(s.get("source", ""), "chats")
        what = (
            f"A chat model: {s.get('method')} fine-tuning by lmforge of {s.get('base')}, {shape}, {params}; "
            f"{s.get('steps')} steps on {s.get('train_examples')} {examples} "
            f"({s.get('heldout_examples')} held out). Artifact finetune/{model.fingerprint}."
        )
        data = (
            f"Its base model learned from chunk {chunk.fingerprint}: {_chunk_figures(chunk)} of {sources(ws, chunk)}."
        )
    else:
        trained = f"{s['steps']} steps, {s['tokens']:,} tokens" if "steps" in s and "tokens" in s else "trained"
        what = (
            f"A GPT-style language model (Llama layout), {shape}, {params}, pretrained by lmforge "
            f"({trained}). Artifact pretrain/{model.fingerprint}."
        )
        data = f"Trained on chunk {chunk.fingerprint}: {_chunk_figures(chunk)} of {sources(ws, chunk)}."
    return f"{what}\n\n{data}"


def describe_registered_model(ws: Workspace, name: str, model: ArtifactRef, chunk: ArtifactRef) -> str:
    """What every version of registered model `name` is, and what its aliases mean."""
    aliases = (
        "@champion is the best version so far (lower validation bits per byte by enough, BLEU on held-out "
        "text not lower by too much), @challenger the newest"
    )
    if model.stage == "finetune":
        return (
            f"{name}: chat models fine-tuned by lmforge from language models pretrained on {sources(ws, chunk)}. "
            f"{aliases}; @int8 a dynamic-int8 copy. Each version's description gives its size, data and scores."
        )
    return (
        f"{name}: GPT-style language models pretrained by lmforge on {sources(ws, chunk)}. "
        f"{aliases}. Each version's description gives its size, data and scores."
    )


def sources(ws: Workspace, chunk: ArtifactRef) -> str:
    """Where the chunk's documents were crawled from, as the crawl's config names them."""
    crawl = ws.upstream("chunk", chunk.fingerprint).get("crawl")
    try:
        cfg = read_manifest(ws.artifact_dir("crawl", crawl))["config"] if crawl else {}
    except ArtifactError:  # removed since (a newer crawl of the same config replaced it)
        cfg = {}
    found = []
    urls = cfg.get("urls") or []
    if urls:
        more = f" and {len(urls) - 3} more" if len(urls) > 3 else ""
        found.append(f"web pages crawled from {', '.join(urls[:3])}{more}")
    others = ("urls", "warc", "files", "hf_dataset")
    if cfg.get("pydoc") or (cfg and cfg.get("pydoc") is None and not any(cfg.get(k) for k in others)):
        found.append("the Python standard library's documentation (pydoc)")
    if cfg.get("warc"):
        found.append(f"{len(cfg['warc'])} WARC file{'s' if len(cfg['warc']) > 1 else ''}")
    if cfg.get("files"):
        found.append("the files under " + ", ".join(f["path"] for f in cfg["files"]))
    if cfg.get("hf_dataset"):
        found.append("the datasets " + ", ".join(d["path"] for d in cfg["hf_dataset"]))
    if not found:
        return "documents whose crawl is no longer in the workspace"
    return "; ".join(found) + (f" (crawl {crawl})" if crawl else "")


def _shape(model: ArtifactRef) -> str:
    try:
        c = json.loads((model.dir / CONFIG).read_text())
    except (OSError, ValueError):
        return "shape unknown"
    return (
        f"{c['n_layer']} layers of width {c['n_embd']} with {c['n_head']} heads, a {c['seq_len']}-token context "
        f"and a {c['vocab_size']:,}-token vocabulary"
    )


def _chunk_figures(chunk: ArtifactRef) -> str:
    train, val = chunk.stats.get("train") or {}, chunk.stats.get("val") or {}
    if "tokens" not in train:
        return "its training blocks"
    held = f", {val['documents']:,} more held out for validation" if val.get("documents") else ""
    return f"{train['tokens']:,} tokens from {train.get('documents', 0):,} documents{held}"
