"""The evaluation metrics against what they must equal: a uniform model's perplexity is its
vocabulary size, bits-per-byte is a hand computation from known logits, the sliding window scores
every token once exactly as the reference loop does, and BLEU/chrF are sacrebleu's own command
line's figures. Real GPTs (tiny, with weights set by hand) and the real scoring code throughout."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lm_core.chunk.pack import BlockPacker
from lm_core.config import GenerationConfig
from lm_core.evaluate.bleu import corpus_scores, score_pairs, segment, settings
from lm_core.evaluate.errors import EvalSetError
from lm_core.evaluate.pairs import Pair
from lm_core.evaluate.perplexity import score_blocks, score_texts, sliding_windows
from lm_core.model import GPT, GPTConfig
from lm_core.textgen import TextModel
from lm_core.tokenize.bpe import train_tokenizer, vocab_size

CONTEXT = 16
CORPUS = [
    "The scheduler reads 12 shards before it merges the tokens of step 3.",
    "A crawler obeys robots.txt; the registry keeps every model's metrics.",
    "Perplexity is the exponential of the mean loss, in nats per token.",
] * 20
LONG_TEXT = " ".join(CORPUS[:3]) * 3  # far longer than the context


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


def tiny_gpt(vocab: int, **overrides) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=vocab, seq_len=CONTEXT, n_layer=1, n_head=2, n_kv_head=2, n_embd=16, tie_embeddings=False)
    return GPT(GPTConfig(**(cfg | overrides))).eval()


def uniform_model(tokenizer) -> TextModel:
    """Zero output weights: every logit is 0, every token has probability 1/V."""
    gpt = tiny_gpt(vocab_size(tokenizer))
    with torch.no_grad():
        gpt.lm_head.weight.zero_()
    return TextModel(gpt, tokenizer)


def fixed_logits_model(tokenizer, logits: torch.Tensor) -> TextModel:
    """A GPT whose logits are `logits` at every position: the blocks add nothing (zero output
    projections), every token embeds to ones, RMSNorm without epsilon keeps ones, and each row
    of the head sums to its logit."""
    gpt = tiny_gpt(len(logits), norm_eps=0.0)
    with torch.no_grad():
        for block in gpt.blocks:
            block.attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        gpt.embed.weight.fill_(1.0)
        gpt.lm_head.weight.copy_((logits / gpt.cfg.n_embd)[:, None].expand(-1, gpt.cfg.n_embd))
    return TextModel(gpt, tokenizer)


def hand_nats(logits: list[float], targets: list[int]) -> float:
    """Cross-entropy summed over targets, in float64 by hand: logsumexp(logits) - logits[target]."""
    lse = math.log(sum(math.exp(v) for v in logits))
    return sum(lse - logits[t] for t in targets)


def write_val_blocks(folder, tokens: np.ndarray, vocab: int) -> None:
    packer = BlockPacker(folder, CONTEXT, blocks_per_shard=3, vocab_size=vocab)
    packer.add(tokens)
    packer.close()


# ----------------------------------------------------------------------------- perplexity


def test_a_uniform_model_has_perplexity_v_on_blocks_and_texts(tokenizer, tmp_path):
    model = uniform_model(tokenizer)
    V = vocab_size(tokenizer)
    write_val_blocks(tmp_path / "val", np.random.default_rng(0).integers(0, V, 7 * (CONTEXT + 1) + 5), V)

    blocks = score_blocks(model, tmp_path / "val", batch_size=3, bytes_per_token=2.5)
    assert blocks.tokens == 7 * CONTEXT  # every target of every whole block; the tail is not a block
    assert blocks.ppl == pytest.approx(V, rel=1e-5)
    assert blocks.loss == pytest.approx(math.log(V), rel=1e-6)
    assert blocks.bpb == pytest.approx(math.log2(V) / 2.5, rel=1e-6)

    texts = score_texts(model, [LONG_TEXT, "short"], batch_size=4)
    assert texts.ppl == pytest.approx(V, rel=1e-5)


def test_bits_per_byte_matches_a_hand_computation(tokenizer, tmp_path):
    V = vocab_size(tokenizer)
    logits = torch.tensor([0.25 * (v % 7) - 0.5 * (v % 3) for v in range(V)])
    model = fixed_logits_model(tokenizer, logits)
    probe = model.model(torch.tensor([[5, 9, 200, 1]]))[0][0]
    assert torch.allclose(probe, logits.expand_as(probe), atol=1e-5)  # the same known logits everywhere

    docs = ["héllo wörld, 3 shards", "The registry"]
    eot = tokenizer.token_to_id("<|endoftext|>")
    targets = [t for d in docs for t in tokenizer.encode(d).ids + [eot]]  # each document, then end-of-text
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    score = score_texts(model, docs, batch_size=2, stride=5)
    assert score.tokens == len(targets) and score.bytes == n_bytes
    assert score.nats == pytest.approx(hand_nats(logits.tolist(), targets), rel=1e-5)
    assert score.bpb == pytest.approx(hand_nats(logits.tolist(), targets) / math.log(2) / n_bytes, rel=1e-5)

    stream = np.random.default_rng(1).integers(0, V, 4 * (CONTEXT + 1))
    write_val_blocks(tmp_path / "val", stream, V)
    blocks = score_blocks(model, tmp_path / "val", batch_size=3, max_batches=1, bytes_per_token=3.0)
    first3 = stream[: 3 * (CONTEXT + 1)].reshape(3, CONTEXT + 1)[:, 1:].ravel().tolist()  # one batch of 3 blocks
    assert blocks.tokens == len(first3)
    assert blocks.nats == pytest.approx(hand_nats(logits.tolist(), first3), rel=1e-5)
    assert blocks.bpb == pytest.approx(blocks.nats / math.log(2) / (3.0 * len(first3)), rel=1e-9)


# ----------------------------------------------------------------------------- sliding window


@pytest.mark.parametrize(
    "n,window,stride", [(1, 16, 8), (16, 16, 8), (17, 16, 8), (100, 16, 5), (100, 16, 16), (9, 4, 1)]
)
def test_sliding_windows_score_every_target_once_with_the_most_context(n, window, stride):
    seen = np.zeros(n, dtype=int)
    for w in sliding_windows(n, window, stride):
        assert w.end - w.start <= window
        for t in range(w.end - w.scored, w.end):
            seen[t] += 1
            assert t - w.start + 1 >= min(t + 1, window - stride + 1)  # tokens of context the target sees
    assert seen.tolist() == [1] * n


def test_a_stride_longer_than_the_context_would_skip_tokens_and_is_refused():
    with pytest.raises(EvalSetError, match=r"stride \(17\) must lie between 1 and the context \(16\)"):
        sliding_windows(100, 16, 17)


def reference_loss(gpt: GPT, stream: list[int], window: int, stride: int) -> tuple[float, int]:
    """Hugging Face's loop, literally: one unpadded forward per window, earlier targets ignored."""
    ids = torch.tensor(stream)[None]
    n = ids.size(1) - 1
    nats, count, prev_end = 0.0, 0, 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        logits = gpt(ids[:, begin:end])[0]
        losses = F.cross_entropy(logits[0], ids[0, begin + 1 : end + 1], reduction="none")
        nats += losses[-(end - prev_end) :].sum().item()
        count += end - prev_end
        prev_end = end
        if end == n:
            break
    return nats, count


@pytest.mark.parametrize("stride", [1, 5, 16])
def test_the_sliding_window_gives_the_reference_loss_and_counts_every_token(tokenizer, stride):
    gpt = tiny_gpt(vocab_size(tokenizer))
    model = TextModel(gpt, tokenizer)
    docs = [LONG_TEXT, "The registry keeps every model."]
    eot = tokenizer.token_to_id("<|endoftext|>")
    stream = [eot] + [t for d in docs for t in tokenizer.encode(d).ids + [eot]]
    assert len(stream) > 3 * CONTEXT
    score = score_texts(model, docs, batch_size=3, stride=stride)  # the last window is shorter: padded in its batch
    with torch.no_grad():
        nats, count = reference_loss(gpt, stream, CONTEXT, stride)
    assert score.tokens == count == len(stream) - 1
    assert score.nats == pytest.approx(nats, rel=1e-5)


def test_a_text_that_fits_one_window_scores_as_one_forward_pass(tokenizer):
    gpt = tiny_gpt(vocab_size(tokenizer))
    model = TextModel(gpt, tokenizer)
    text = "The registry"
    eot = tokenizer.token_to_id("<|endoftext|>")
    stream = torch.tensor([eot] + tokenizer.encode(text).ids + [eot])
    assert len(stream) - 1 <= CONTEXT
    with torch.no_grad():
        _, whole = gpt(stream[None, :-1], stream[None, 1:])
    score = score_texts(model, [text], batch_size=4, stride=3)
    assert score.tokens == len(stream) - 1
    assert score.loss == pytest.approx(whole.item(), rel=1e-6)


# ----------------------------------------------------------------------------- BLEU and chrF

HYPOTHESES = [
    "The scheduler reads 12 shards\nbefore it merges them.",  # a continuation over two lines
    " the crawler obeys robots.txt",
    "Perplexity is   the exponential of the loss.",
    "",
]
REFERENCES = [
    "The scheduler reads 12 shards before it merges the tokens.",
    "The crawler obeys robots.txt and its crawl delay.",
    "Perplexity is the exponential of the mean loss.",
    "Nothing was generated here.",
]


def test_bleu_and_chrf_equal_sacrebleus_command_line(tmp_path):
    scores, signatures = corpus_scores(HYPOTHESES, REFERENCES)
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("".join(segment(h) + "\n" for h in HYPOTHESES), encoding="utf-8")
    ref.write_text("".join(segment(r) + "\n" for r in REFERENCES), encoding="utf-8")
    cli = [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "-f", "json", "-w", "6"]
    out = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    bleu, chrf = json.loads(out)
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100
    assert scores["bleu"] == pytest.approx(bleu["score"], abs=1e-5)
    assert scores["chrf"] == pytest.approx(chrf["score"], abs=1e-5)
    assert signatures == {"bleu": bleu["signature"], "chrf": chrf["signature"]}


def test_score_pairs_generates_in_batches_and_keeps_each_prompts_place(tokenizer):
    model = TextModel(tiny_gpt(vocab_size(tokenizer)), tokenizer)
    prompts = ["The scheduler reads", "A", "Perplexity is the exponential of", "The crawler", "The registry keeps"]
    pairs = [Pair(p, f"reference {i}") for i, p in enumerate(prompts)]
    cfg = GenerationConfig(max_new_tokens=6)
    scores = score_pairs(model, pairs, cfg, batch_size=2)
    one_by_one = [model.generate([p], settings(cfg))[0] for p in prompts]
    assert [s["prompt"] for s in scores.samples] == prompts
    assert [s["generation"] for s in scores.samples] == one_by_one
    expected, signatures = corpus_scores(one_by_one, [p.reference for p in pairs])
    assert (scores.bleu, scores.chrf) == (expected["bleu"], expected["chrf"])
    assert scores.signatures == signatures and scores.generated_tokens > 0
