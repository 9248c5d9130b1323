"""Evaluation throughput: perplexity over validation blocks, sliding-window perplexity over text,
and generation for BLEU, in tokens/s.

    .venv/bin/python bench/eval_throughput.py [--preset small] [--chunk DIR] [--blocks 128]
                                              [--batch 16] [--pairs 32] [--device cpu]

The model has random weights (throughput does not depend on them). Without `--chunk` the script
builds a realistic validation split once, in bench/out/eval-chunk-<vocab>-<seq_len>/: a byte-level
BPE trained on Python's standard library sources, which are then encoded and packed into blocks
as the chunk stage does. With `--chunk` it reads a chunk artifact's validation split and tokenizer.

Figures printed: validation blocks through `score_validation` beside bare forward passes over the
same batches (the difference is what the evaluation adds: reading mapped shards, summing);
`score_texts` with the default stride (half the context: each token costs two window positions);
and `score_pairs` generation (KV cache, greedy, prompts of `--prompt` tokens), batched and one
prompt at a time. Each figure is the fastest of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from lm_core.chunk.pack import BlockPacker
from lm_core.config import GenerationConfig, ModelConfig
from lm_core.evaluate.bleu import score_pairs
from lm_core.evaluate.pairs import Pair
from lm_core.evaluate.perplexity import score_texts, score_validation
from lm_core.model import GPT
from lm_core.textgen import TextModel
from lm_core.tokenize.bpe import END_OF_TEXT, load_tokenizer, train_tokenizer, vocab_size
from lm_core.train.loader import eval_batches
from lm_core.train.plan import model_config

OUT = Path(__file__).parent / "out"


def stdlib_texts(max_chars: int) -> list[str]:
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return texts


def build_chunk(vocab: int, seq_len: int, blocks: int) -> Path:
    """A chunk-like folder: tokenizer.json, val/ blocks of real text, a manifest with the split's
    tokens and bytes (what bits-per-byte needs)."""
    folder = OUT / f"eval-chunk-{vocab}-{seq_len}"
    if (folder / "_manifest.json").is_file():
        return folder
    texts = stdlib_texts(4_000_000)
    tok = train_tokenizer(texts, vocab)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    eot = tok.token_to_id(END_OF_TEXT)
    stream = np.concatenate([np.array(e.ids + [eot]) for e in tok.encode_batch(texts)])
    packer = BlockPacker(folder / "val", seq_len, 8192, vocab_size(tok))
    packer.add(stream[: blocks * (seq_len + 1)])
    packer.close()
    # the split's tokens and bytes as the chunk stage counts them (the blocks are a prefix of it)
    n_bytes = sum(len(t.encode()) for t in texts)
    stats = {
        "val": {"blocks": packer.blocks, "tokens": len(stream), "bytes": n_bytes},
        "seq_len": seq_len,
        "vocab_size": vocab_size(tok),
    }
    (folder / "_manifest.json").write_text(json.dumps({"stats": stats, "config": {}, "inputs": {}}))
    return folder


def best_of(repeat: int, fn):
    """fn's result and its fastest wall time over `repeat` runs (the machine may be shared)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small")
    ap.add_argument("--chunk", type=Path, help="a chunk artifact folder; default: build one from stdlib sources")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=128, help="validation blocks to score")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=48)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--text-chars", type=int, default=60_000, help="characters of text for the sliding window")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest is shown")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    chunk = args.chunk or build_chunk(args.vocab, args.seq_len, args.blocks)
    stats = json.loads((chunk / "_manifest.json").read_text())["stats"]
    tok = load_tokenizer(chunk / "tokenizer.json")
    torch.manual_seed(0)
    gpt = GPT(model_config(ModelConfig(preset=args.preset), stats["vocab_size"], stats["seq_len"]))
    model = TextModel(gpt.to(args.device), tok)
    max_batches = -(-args.blocks // args.batch)
    print(
        f"model: {args.preset} ({gpt.num_params() / 1e6:.1f}M params, context {stats['seq_len']}, vocab "
        f"{stats['vocab_size']}), device {args.device}, threads {torch.get_num_threads()}, best of {args.repeat}; "
        f"chunk {chunk}"
    )

    # validation blocks: the evaluation path, and bare forward passes over the same batches
    score_validation(model, chunk, args.batch, 1)  # warm-up
    ppl, seconds = best_of(args.repeat, lambda: score_validation(model, chunk, args.batch, max_batches))
    batches = [(x.to(args.device), y.to(args.device)) for x, y in eval_batches(chunk / "val", args.batch, max_batches)]
    _, bare = best_of(args.repeat, lambda: bare_forward(gpt, batches))
    print(
        f"validation blocks, batch {args.batch}: {ppl.tokens:,} tokens in {seconds:.2f} s = "
        f"{ppl.tokens / seconds:,.0f} tokens/s (bare forward passes: {ppl.tokens / bare:,.0f} tokens/s; "
        f"evaluation overhead {100 * (seconds - bare) / bare:+.1f}%); loss {ppl.loss:.3f}, bits/byte {ppl.bpb:.3f}"
    )

    texts = stdlib_texts(args.text_chars)
    score, seconds = best_of(args.repeat, lambda: score_texts(model, texts, args.batch))
    print(
        f"texts, sliding window (stride {stats['seq_len'] // 2}), batch {args.batch}: {score.tokens:,} tokens in "
        f"{seconds:.2f} s = {score.tokens / seconds:,.0f} tokens/s scored"
    )

    ids = np.concatenate([tok.encode(t).ids for t in stdlib_texts(args.pairs * args.prompt * 8)])
    step = len(ids) // args.pairs  # prompts from passages spread over the text
    pairs = [Pair(tok.decode(ids[i * step : i * step + args.prompt].tolist()), "") for i in range(args.pairs)]
    gen = GenerationConfig(max_new_tokens=args.new)
    # greedy decoding is deterministic: count the new tokens once, exactly, as TextModel.generate makes them
    prompt_ids = [model.encode(p.prompt) for p in pairs]
    new_tokens = sum(len(o) for o in gpt.generate(prompt_ids, args.new, temperature=0, stop_tokens=(model.eos_id,)))
    for batch in (args.batch, 1):
        score_pairs(model, pairs[:batch], gen, batch)  # warm-up
        _, seconds = best_of(args.repeat, lambda b=batch: score_pairs(model, pairs, gen, b))
        print(
            f"generation for BLEU, batch {batch:>2}: {len(pairs)} prompts of {args.prompt} tokens, {new_tokens:,} "
            f"new tokens in {seconds:.2f} s = {new_tokens / seconds:,.0f} tokens/s (greedy, KV cache)"
        )


@torch.inference_mode()
def bare_forward(gpt: GPT, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The same forward passes with the blocks already in memory, on the device."""
    total = torch.zeros((), device=batches[0][0].device)
    for x, y in batches:
        total += gpt(x, y)[1]
    return total.item()  # waits for the device


if __name__ == "__main__":
    main()
