"""Pretraining: it learns, batches add up, resume is exact (weights, metrics, samples, MLflow
steps), ranks split the data, checkpoints are plain tensors, broken checkpoints are named,
throughput is MFU only against a published peak, and a full disk is one clear error."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import TINY_SETTINGS, write_topic_docs
from safetensors.torch import load_file

from lm_core import schemas
from lm_core.config import load_config
from lm_core.model import GPT, GPTConfig
from lm_core.model_folder import WeightsError, save_tensors
from lm_core.shards import write_shard
from lm_core.tracking import chart_name
from lm_core.train import checkpoint as ckpt
from lm_core.train import loop
from lm_core.train.loader import BlockStore, TrainLoader
from lm_core.train.loop import TrainData, setup_runtime, train
from lm_core.train.optim import Muon, MuonRates, Schedule, adamw, muon_and_adamw, orthogonalised
from lm_core.train.plan import published_peak
from lm_core.train.stage import run_pretrain
from lm_core.workspace import DiskFullError, Workspace, write_json_atomic

V, T = 64, 16
REPO = Path(__file__).parent.parent
# For comparisons to 1e-4 between summation orders: on a CPU with native bf16, `auto` would autocast
FP32 = ("pretrain.precision=fp32", "pretrain.muon_precision=fp32")


def counting_blocks(n: int, seed: int) -> pa.Table:
    """Blocks of a learnable language: runs of consecutive ids (mod V) from random starts."""
    starts = np.random.default_rng(seed).integers(0, V, n)
    arr = (starts[:, None] + np.arange(T + 1)[None]) % V
    flat = pa.array(arr.astype(np.uint16).ravel())
    return pa.table({"tokens": pa.FixedSizeListArray.from_arrays(flat, T + 1)}, schema=schemas.block(V, T))


@pytest.fixture(scope="module")
def chunk_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("chunk")
    write_shard(d / "train" / "part-00000.arrow", counting_blocks(96, 0))
    write_shard(d / "train" / "part-00001.arrow", counting_blocks(160, 1))
    write_shard(d / "val" / "part-00000.arrow", counting_blocks(40, 2))
    stats = {"vocab_size": V, "seq_len": T, "val": {"tokens": 40 * (T + 1), "bytes": 3 * 40 * (T + 1)}}
    write_json_atomic(d / "_manifest.json", {"stats": stats, "inputs": {}})
    return d


def cfg_with(*overrides: str):
    base = [
        "model.preset=tiny",
        "pretrain.micro_batch=8",
        "pretrain.lr=0.01",
        "pretrain.warmup_steps=2",
        "pretrain.eval_every=1000",
        "pretrain.checkpoint_every=1000",
        "pretrain.log_every=1",
        "pretrain.eval_batches=5",
    ]
    return load_config(None, [*base, *overrides])


def run(chunk_dir: Path, out: Path, *overrides: str, **kwargs):
    cfg = cfg_with(*overrides)
    return train(cfg.pretrain, cfg.model, TrainData.from_chunk(chunk_dir), out, seed=7, **kwargs)


def tiny_samples(model, step: int) -> list[dict]:
    """A greedy continuation at each evaluation: it changes as the weights do."""
    return [{"step": step, "prompt": [1, 2, 3], "text": model.generate([[1, 2, 3]], 6, temperature=0)[0]}]


TIMINGS = {"tokens_per_s", "loader_wait_fraction", "matmul_share", "mfu"}  # differ from run to run


def same_report(a, b) -> None:
    """Two trainings report alike: the same logged steps with the same keys, the same figures but
    timings, the same last evaluation and the same samples (what metrics.json/samples.json hold)."""
    assert [sorted(r) for r in a.history] == [sorted(r) for r in b.history]
    figures = [[{k: v for k, v in r.items() if k not in TIMINGS} for r in x.history] for x in (a, b)]
    assert figures[0] == figures[1]
    assert a.final == b.final and a.final
    assert a.samples == b.samples


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / ckpt.WEIGHTS))


def same_weights(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


@pytest.mark.parametrize("masked", [False, True])
def test_the_models_loss_is_the_cross_entropy_of_its_logits_with_the_same_gradients(masked):
    # the loss never makes whole logits (LinearCrossEntropy): it must equal, value and gradients,
    # the plain cross-entropy of the logits the model returns without targets
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=V, seq_len=T, n_layer=2, n_head=2, n_kv_head=2, n_embd=32, tie_embeddings=False))
    idx, targets = torch.randint(0, V, (3, T)), torch.randint(0, V, (3, T))
    mask = (torch.rand(3, T) > 0.4) if masked else None
    _, loss = model(idx, targets, mask)
    loss.backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits, _ = model(idx)
    plain = F.cross_entropy(logits.view(-1, V), targets.view(-1), reduction="none")
    plain = plain[mask.view(-1)].mean() if masked else plain.mean()
    plain.backward()
    assert loss.item() == pytest.approx(plain.item(), rel=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(fused[n], p.grad, rtol=1e-4, atol=1e-7), n
    with torch.no_grad():  # evaluation: the same value, no graph
        _, scored = model(idx, targets, mask)
    assert scored.item() == pytest.approx(loss.item(), rel=1e-6) and not scored.requires_grad
    with torch.autocast("cpu", dtype=torch.bfloat16):  # in bf16: close, and the weights' gradients stay fp32
        _, low = model(idx, targets, mask)
    model.zero_grad()
    low.backward()
    assert low.item() == pytest.approx(plain.item(), rel=2e-2) and model.lm_head.weight.grad.dtype == torch.float32
    model.lm_head.weight.requires_grad_(False)  # a frozen head: the rest still learns
    model.zero_grad()
    model(idx, targets, mask)[1].backward()
    assert model.lm_head.weight.grad is None and torch.allclose(
        model.embed.weight.grad, fused["embed.weight"], atol=1e-6
    )


def test_the_schedule_warms_up_then_decays_to_its_floor():
    cosine = [Schedule(peak=1.0, floor=0.1, warmup=2, steps=6).lr_at(i) for i in range(6)]
    assert cosine[:2] == [0.5, 1.0] and cosine[2:] == sorted(cosine[2:], reverse=True)
    assert cosine[-1] == pytest.approx(0.1)  # pretraining's last step runs at the floor
    finetune = [Schedule(1.0, 0.1, 2, 6, ends_at_floor=False).lr_at(i) for i in range(6)]
    assert finetune[2] == 1.0 and finetune[-1] > 0.1  # fine-tuning's cosine is a step behind
    wsd = [Schedule(1.0, 0.1, 1, 6, wsd=True, decay_steps=2).lr_at(i) for i in range(6)]
    assert wsd == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.55, 0.1])


def test_adamw_decays_matrices_and_skips_gains_and_frozen_parameters():
    model = GPT(GPTConfig(vocab_size=V, seq_len=T, n_layer=1, n_head=2, n_kv_head=2, n_embd=16))
    model.embed.weight.requires_grad_(False)
    decay, no_decay = adamw(model.parameters(), 1e-3, 0.1, (0.9, 0.95)).param_groups
    assert decay["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.dim() == 1 for p in no_decay["params"])
    assert not any(p is model.embed.weight for p in decay["params"])


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest_each_at_its_own_rate():
    rates = MuonRates(matrix=0.02, embedding=0.3, head=0.004, gain=0.001)
    untied = GPT(GPTConfig(vocab_size=V, seq_len=T, n_layer=1, n_head=2, n_kv_head=2, n_embd=16, tie_embeddings=False))
    muon, adam = muon_and_adamw(untied, rates, tied=False, weight_decay=0.0, betas=(0.8, 0.95))
    matrices = {id(p) for p in untied.blocks.parameters() if p.dim() == 2}
    assert {id(p) for p in muon.param_groups[0]["params"]} == matrices
    by_rate = {g["peak_lr"]: g["params"] for g in adam.param_groups}
    assert by_rate[0.3] == [untied.embed.weight] and by_rate[0.004] == [untied.lm_head.weight]
    assert all(p.dim() == 1 for p in by_rate[0.001])
    tied = GPT(GPTConfig(vocab_size=V, seq_len=T, n_layer=1, n_head=2, n_kv_head=2, n_embd=16))
    _, adam = muon_and_adamw(tied, rates, tied=True, weight_decay=0.0, betas=(0.8, 0.95))
    # a tied embedding is the output layer too: it takes the head's (small) rate, not the embedding's
    assert [g["peak_lr"] for g in adam.param_groups] == [0.004, 0.001]
    # fine-tuning with every block frozen: no matrix for Muon, so no Muon (torch refuses an empty one)
    tied.blocks.requires_grad_(False)
    (only,) = muon_and_adamw(tied, rates, tied=True, weight_decay=0.0, betas=(0.8, 0.95))
    assert isinstance(only, torch.optim.AdamW)


def test_muons_update_is_orthogonalised_and_matches_torchs_up_to_bfloat16():
    g = torch.randn(48, 24, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(orthogonalised(g, 5))
    assert 0.6 < s.min() and s.max() < 1.25  # every direction moves about equally, whatever g's spectrum
    w = torch.randn(48, 24)
    ours, theirs = nn.Parameter(w.clone()), nn.Parameter(w.clone())
    ours.grad, theirs.grad = g.clone(), g.clone()
    Muon([ours], lr=0.02, weight_decay=0.1).step()
    torch.optim.Muon([theirs], lr=0.02, weight_decay=0.1, adjust_lr_fn="original").step()
    moved = (ours - w).abs().max()
    assert moved > 0.01 and (ours - theirs).abs().max() < 0.05 * moved  # torch's runs in bfloat16
    s16 = torch.linalg.svdvals(orthogonalised(g, 5, torch.bfloat16).float())
    assert 0.6 < s16.min() and s16.max() < 1.25  # bf16's rounding leaves it as orthogonal


def test_precisions_follow_the_config_and_auto_takes_bf16_only_where_it_is_native(monkeypatch):
    def runtime(setting: str) -> loop.Runtime:
        overrides = [f"pretrain.precision={setting}", f"pretrain.muon_precision={setting}", "pretrain.device=cpu"]
        return setup_runtime(load_config(None, overrides).pretrain)

    assert (runtime("fp32").autocast_dtype, runtime("fp32").ns_dtype) == (None, torch.float32)
    assert (runtime("bf16").autocast_dtype, runtime("bf16").ns_dtype) == (torch.bfloat16, torch.bfloat16)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    emulated = runtime("auto")  # a CPU that would emulate bf16: fp32 throughout
    assert (emulated.precision, emulated.ns_dtype, emulated.use_scaler) == ("fp32", torch.float32, False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    native = runtime("auto")
    assert (native.precision, native.autocast_dtype, native.ns_dtype) == ("bf16", torch.bfloat16, torch.bfloat16)


def test_loss_falls_and_validation_is_measured(chunk_dir, tmp_path):
    r = run(chunk_dir, tmp_path, "pretrain.max_steps=40")
    first, last = r.history[0]["loss"], r.history[-1]["loss"]
    assert last < 0.5 * first, (first, last)
    assert r.final["val_loss"] < first
    assert r.final["val_ppl"] == pytest.approx(np.exp(r.final["val_loss"]))
    # bits per byte = nats per token / ln 2 / (bytes per token); the fixture has 3 bytes per token
    assert r.final["val_bpb"] == pytest.approx(r.final["val_loss"] / np.log(2) / 3)
    assert (tmp_path / ckpt.WEIGHTS).is_file()


def test_a_tiny_batch_can_be_overfit(tmp_path):
    d = tmp_path / "one"
    write_shard(d / "train" / "part-00000.arrow", counting_blocks(8, 3))
    write_shard(d / "val" / "part-00000.arrow", counting_blocks(8, 3))
    write_json_atomic(d / "_manifest.json", {"stats": {"vocab_size": V, "seq_len": T, "val": {}}, "inputs": {}})
    r = run(d, tmp_path / "out", "pretrain.max_steps=150", "pretrain.lr=0.02", "pretrain.weight_decay=0")
    assert r.history[-1]["loss"] < 0.05, r.history[-1]


def test_gradient_accumulation_equals_the_large_batch(chunk_dir, tmp_path):
    # fp32 throughout: bf16's rounding would part the two summation orders' gradients by more than
    # the tolerance, on a CPU where `auto` picks bf16
    big = run(chunk_dir, tmp_path / "big", "pretrain.max_steps=5", "pretrain.micro_batch=8", *FP32)
    acc = run(
        chunk_dir,
        tmp_path / "acc",
        "pretrain.max_steps=5",
        "pretrain.micro_batch=2",
        f"pretrain.total_batch_tokens={8 * T}",
        *FP32,
    )
    assert acc.plan.grad_accum == 4 and big.plan.grad_accum == 1
    # equal up to float summation order (Muon's and Adam's first steps are ~1e-2 per weight)
    assert same_weights(weights(tmp_path / "big"), weights(tmp_path / "acc"), atol=1e-4)
    # ...while a different batch gives clearly different weights: the comparison can fail
    run(chunk_dir, tmp_path / "other", "pretrain.max_steps=5", "pretrain.micro_batch=2")
    assert not same_weights(weights(tmp_path / "big"), weights(tmp_path / "other"), atol=1e-3)


KILLABLE_TRAIN = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_train as t
t.run(Path(sys.argv[1]), Path(sys.argv[2]), "pretrain.max_steps=20", "pretrain.checkpoint_every=2",
      "pretrain.keep_checkpoints=3", "pretrain.eval_every=4", sample_fn=t.tiny_samples)
"""


def test_killed_and_resumed_run_equals_an_uninterrupted_one(chunk_dir, tmp_path):
    straight = run(
        chunk_dir, tmp_path / "straight", "pretrain.max_steps=20", "pretrain.eval_every=4", sample_fn=tiny_samples
    )
    out = tmp_path / "killed"
    script = KILLABLE_TRAIN.format(tests=str(Path(__file__).parent))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(chunk_dir), str(out)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not any(int(p.name[5:]) >= 8 for p in ckpt.step_dirs(out / "checkpoints")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # at whatever moment: mid-step or mid-checkpoint
    proc.wait()
    assert not (out / ckpt.WEIGHTS).exists(), "the run was meant to be killed before finishing"
    resumed = run(
        chunk_dir, out, "pretrain.max_steps=20", "pretrain.checkpoint_every=2", "pretrain.keep_checkpoints=3",
        "pretrain.eval_every=4", sample_fn=tiny_samples,
    )  # fmt: skip
    assert resumed.resumed_from is not None and 8 <= resumed.resumed_from < 20
    assert same_weights(weights(tmp_path / "straight"), weights(out)), "resume must be exact on CPU"
    assert straight.steps_done == resumed.steps_done == 20
    assert len(ckpt.step_dirs(out / "checkpoints")) <= 3
    # the history, evaluations and samples logged before the checkpoint came back with it
    same_report(straight, resumed)
    assert [s["step"] for s in resumed.samples] == [4, 8, 12, 16, 20]


def test_stop_and_resume_in_process_is_exact(chunk_dir, tmp_path):
    args = ("pretrain.max_steps=12", "pretrain.schedule=wsd", "pretrain.eval_every=3", "pretrain.log_every=2")
    straight = run(chunk_dir, tmp_path / "a", *args, sample_fn=tiny_samples)
    half = run(chunk_dir, tmp_path / "b", *args, sample_fn=tiny_samples, stop_after=5)
    assert half.steps_done == 5 and not (tmp_path / "b" / ckpt.WEIGHTS).exists()
    resumed = run(chunk_dir, tmp_path / "b", *args, sample_fn=tiny_samples)
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    same_report(straight, resumed)  # no extra row where the first process stopped (step 5)
    # a process killed after its final checkpoint, before publishing: the next one has nothing
    # to train, and reports the same all the same
    (tmp_path / "b" / ckpt.WEIGHTS).unlink()
    again = run(chunk_dir, tmp_path / "b", *args, sample_fn=tiny_samples)
    assert again.resumed_from == 12 and again.steps_done == 12
    same_report(straight, again)
    assert same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


DISTRIBUTED_MAIN = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_train as t
t.run(Path(sys.argv[1]), Path(sys.argv[2]), "pretrain.max_steps=4", "pretrain.micro_batch=4",
      "pretrain.distributed.strategy={strategy}", "pretrain.checkpoint_every=2", *t.FP32)
"""


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_process_at_the_same_global_batch(chunk_dir, tmp_path, strategy):
    # fp32 on both sides: bf16's rounding would part the two gradient sums' results
    one = run(chunk_dir, tmp_path / "one", "pretrain.max_steps=4", "pretrain.micro_batch=8", *FP32)
    spec_out = tmp_path / strategy
    script_file = tmp_path / "distributed_main.py"
    script_file.write_text(DISTRIBUTED_MAIN.format(tests=str(Path(__file__).parent), strategy=strategy))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node=2",
            "--master-port=29517",
            str(script_file),
            str(chunk_dir),
            str(spec_out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert one.plan.total_batch_tokens == 8 * T
    assert same_weights(weights(tmp_path / "one"), weights(spec_out), atol=1e-4)
    # rank 0 gathered whole weights and optimizer state into its checkpoints
    last = ckpt.step_dirs(spec_out / "checkpoints")[-1]
    assert set(weights(last)) == set(weights(tmp_path / "one"))
    assert len(ckpt.load_train_state(last)["loader"]) == 2


def test_ranks_read_disjoint_blocks_and_the_order_is_seeded(tmp_path):
    arr = np.zeros((256, T + 1), dtype=np.uint16)
    arr[:, 0], arr[:, 1] = np.arange(256) // V, np.arange(256) % V  # each block names its index
    table = pa.table({"tokens": pa.FixedSizeListArray.from_arrays(pa.array(arr.ravel()), T + 1)})
    write_shard(tmp_path / "train" / "part-00000.arrow", table)

    def seen(rank, world, seed=1, batches=16):
        loader = TrainLoader(tmp_path / "train", 8, seed, rank, world)
        try:
            return [int(x[0]) * V + int(x[1]) for _ in range(batches) for x in loader.next()[0]]
        finally:
            loader.close()

    r0, r1 = seen(0, 2), seen(1, 2)  # 16 batches of 8 = each rank's whole share of one epoch
    assert sorted(r0 + r1) == list(range(256)), "together the ranks see every block exactly once"
    assert seen(0, 1) == seen(0, 1) and seen(0, 1) != seen(0, 1, seed=2)


def test_loader_position_resumes_the_exact_batch_sequence(chunk_dir):
    full = TrainLoader(chunk_dir / "train", 8, 3)
    expected = [full.next()[0] for _ in range(40)]  # crosses an epoch boundary (256 blocks / 8)
    full.close()
    first = TrainLoader(chunk_dir / "train", 8, 3)
    got = [first.next()[0] for _ in range(17)]
    state = first.state.to_dict()
    first.close()
    second = TrainLoader(chunk_dir / "train", 8, 3, state=state)
    got += [second.next()[0] for _ in range(23)]
    second.close()
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


def test_block_store_maps_without_copying(chunk_dir):
    store = BlockStore(chunk_dir / "train")
    assert len(store) == 256 and store.block_len == T + 1
    assert all(not p.flags.owndata for p in store.parts), "blocks must be views of the mapped shards"


def test_checkpoints_are_plain_tensors_and_refuse_pickles(chunk_dir, tmp_path):
    run(chunk_dir, tmp_path, "pretrain.max_steps=3", "pretrain.checkpoint_every=3")
    last = ckpt.step_dirs(tmp_path / "checkpoints")[-1]
    state = torch.load(last / ckpt.STATE, weights_only=True)
    assert {"optimizer", "rng", "loader"} <= state.keys()
    load_file(str(last / ckpt.WEIGHTS))  # safetensors: no code can run on load

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"optimizer": Evil()}, last / ckpt.STATE)
    with pytest.raises(ckpt.CheckpointError, match="not a plain-tensor file"):
        ckpt.load_train_state(last)


def test_corrupt_or_missing_checkpoints_are_named(chunk_dir, tmp_path):
    run(chunk_dir, tmp_path, "pretrain.max_steps=2", "pretrain.checkpoint_every=2")
    last = ckpt.step_dirs(tmp_path / "checkpoints")[-1]
    weights_file = last / ckpt.WEIGHTS
    weights_file.write_bytes(weights_file.read_bytes()[:100])
    with pytest.raises(WeightsError, match=str(weights_file)):
        run(chunk_dir, tmp_path, "pretrain.max_steps=4")
    (last / ckpt.STATE).unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.load_train_state(last)


class _Scaled(torch.nn.Module):
    """A projection that is not a plain nn.Linear (as LoRA and int8 modules are not)."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * 1.5


@pytest.mark.parametrize(
    "n_kv_head,wrapped,recipe",
    [(2, False, {}), (1, False, {}), (2, True, {}), (2, False, {"qk_norm": True})],
)
def test_kv_cache_generation_equals_recomputing_the_prefix(n_kv_head, wrapped, recipe):
    """The cached path (a prefill, then one token per step against the cache) picks the same
    tokens as a full forward over the prefix at every step: greedy, seeded top-k and nucleus
    sampling, stop tokens, left-padded prompts of different lengths, grouped-query attention,
    projections that are modules of their own, normalised queries and keys."""
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=V, seq_len=40, n_layer=2, n_head=2, n_kv_head=n_kv_head, n_embd=32, **recipe)
    model = GPT(cfg).eval()
    with torch.no_grad():  # larger weights than at init: sharp attention, so a wrong key or angle shows
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    if wrapped:
        for block in model.blocks:
            block.attn.v_proj, block.mlp.up_proj = _Scaled(block.attn.v_proj), _Scaled(block.mlp.up_proj)
    stops = tuple(range(0, V, 6))
    settings = [
        dict(temperature=0),
        dict(temperature=0.8, top_k=8),
        dict(temperature=1.0, top_p=0.9),
        dict(temperature=1.0, top_k=20, stop_tokens=stops),
    ]
    for batch in ([[1, 2, 3, 4, 5], [7], [9, 10]], [[11, 12]]):
        for kw in settings:
            out = {}
            for use_cache in (True, False):
                gen = torch.Generator().manual_seed(3)
                out[use_cache] = model.generate(batch, 30, generator=gen, use_cache=use_cache, **kw)
            assert out[True] == out[False], kw
            assert all(len(row) == 30 for row in out[True]) or "stop_tokens" in kw
            if "stop_tokens" in kw:  # rows end before their first stop token, which is not returned
                assert any(len(row) < 30 for row in out[True]) and not any(set(row) & set(stops) for row in out[True])


# ----------------------------------------------------------------------------- the stage, killed


STAGE_ARGS = [
    *TINY_SETTINGS,
    "pretrain.lr=0.01",
    "pretrain.max_steps=30",
    "pretrain.eval_every=10",
    "pretrain.checkpoint_every=2",
    "pretrain.keep_checkpoints=3",
    "pretrain.log_every=1",
    "pretrain.sample_tokens=8",
]

KILLABLE_STAGE = """
import json, sys
from lm_core.config import load_config
from lm_core.tracking import chart_name
from lm_core.train.stage import run_pretrain
from lm_core.workspace import Workspace
cfg = load_config(None, json.loads(sys.argv[1]))
ws = Workspace(cfg.workspace)
run_pretrain(cfg, ws.resolve("chunk"), ws)
"""


@pytest.fixture(scope="module")
def data_stages(tmp_path_factory) -> Path:
    """A workspace whose data stages ran (crawl -> chunk) and nothing else; copied per test."""
    from lm_core.chunk.stage import run_chunk
    from lm_core.clean.stage import run_clean
    from lm_core.crawl.stage import run_crawl
    from lm_core.tokenize.stage import run_tokenize

    root = tmp_path_factory.mktemp("data")
    write_topic_docs(root / "docs", ["arrow", "parquet", "crawler", "optimizer"], 60)
    cfg = load_config(None, [f"workspace={root / 'ws'}", f"crawl.files=[{{path: {root / 'docs'}}}]", *STAGE_ARGS])
    ws = Workspace(cfg.workspace)
    run_chunk(cfg.chunk, run_tokenize(cfg.tokenize, run_clean(cfg.clean, run_crawl(cfg.crawl, ws), ws), ws), ws)
    return root


def stage_workspace(data_stages: Path, where: Path):
    shutil.copytree(data_stages / "ws", where / "ws", ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    args = [f"workspace={where / 'ws'}", f"crawl.files=[{{path: {data_stages / 'docs'}}}]", *STAGE_ARGS]
    return args, load_config(None, args), Workspace(where / "ws")


def published_report(ref) -> tuple:
    metrics = json.loads((ref.dir / "metrics.json").read_text())
    history = [{k: v for k, v in r.items() if k not in TIMINGS} for r in metrics["history"]]
    return metrics["final"], history, [sorted(r) for r in metrics["history"]], (ref.dir / "samples.json").read_text()


def logged_once(cfg, ref) -> dict[str, list[int]]:
    """Every metric's logged steps in the artifact's MLflow run, each step at most once."""
    from mlflow import MlflowClient

    client, run_id = MlflowClient(cfg.tracking_uri), ref.stats["mlflow_run_id"]
    steps = {k: [m.step for m in client.get_metric_history(run_id, k)] for k in client.get_run(run_id).data.metrics}
    for key, logged in steps.items():
        assert len(logged) == len(set(logged)), f"{key} logged twice at a step: {sorted(logged)}"
    return steps


def test_a_pretrain_killed_after_a_checkpoint_publishes_what_an_uninterrupted_one_does(
    data_stages, tmp_path, monkeypatch
):
    _, cfg, ws = stage_workspace(data_stages, tmp_path / "straight")
    straight = run_pretrain(cfg, ws.resolve("chunk"), ws)
    expected = published_report(straight)
    assert expected[0] and json.loads(expected[3]), "final metrics and samples are published"

    # killed after a checkpoint, mid-training; then run again
    args, cfg, ws = stage_workspace(data_stages, tmp_path / "killed")
    partial = ws.partial_dir("pretrain", straight.fingerprint)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_STAGE, json.dumps(args)], env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    deadline = time.time() + 300
    while time.time() < deadline and not any(int(p.name[5:]) >= 8 for p in ckpt.step_dirs(partial / "checkpoints")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not ws.is_published("pretrain", straight.fingerprint), "the run was meant to be killed before finishing"
    resumed = run_pretrain(cfg, ws.resolve("chunk"), ws)
    assert 8 <= resumed.stats["resumed_from"] < 30
    assert published_report(resumed) == expected
    steps = logged_once(cfg, resumed)
    assert sorted(steps[chart_name("loss")]) == list(range(1, 31))
    assert sorted(steps[chart_name("val_loss")]) == [10, 20, 30]

    # died after its final checkpoint, before publishing: the next run resumes from step 30
    _, cfg, ws = stage_workspace(data_stages, tmp_path / "final")
    from lm_core.train import stage

    finish = stage._finish

    def crash(*a, **k):
        raise RuntimeError("killed while publishing")

    monkeypatch.setattr(stage, "_finish", crash)
    with pytest.raises(RuntimeError, match="killed while publishing"):
        run_pretrain(cfg, ws.resolve("chunk"), ws)
    monkeypatch.setattr(stage, "_finish", finish)
    again = run_pretrain(cfg, ws.resolve("chunk"), ws)
    assert again.stats["resumed_from"] == 30
    assert published_report(again) == expected
    assert sorted(logged_once(cfg, again)[chart_name("loss")]) == list(range(1, 31))


# ----------------------------------------------------------------------------- throughput


def test_throughput_on_a_cpu_is_a_share_of_a_measured_matmul_never_mfu(chunk_dir, tmp_path, monkeypatch):
    r = run(chunk_dir, tmp_path / "a", "pretrain.max_steps=3")
    rows = [row for row in r.history if "tokens_per_s" in row]
    assert rows and all(0 < row["matmul_share"] <= 1 and "mfu" not in row for row in rows)
    # (whether this run was clamped depends on the other worker: a probe measured while it ran
    # and steps timed while it idled give a share above 1, seen once beside it)
    assert r.peak == "measured matmul peak"
    # a probe that under-measured the device (here: 1 kFLOP/s) never shows a share above 1
    monkeypatch.setattr(loop, "measure_matmul_flops", lambda *a, **k: 1e3)
    r = run(chunk_dir, tmp_path / "b", "pretrain.max_steps=3")
    assert all(row["matmul_share"] == 1.0 for row in r.history if "tokens_per_s" in row)
    assert r.matmul_share_clamped


def test_mfu_is_against_the_published_peak_of_the_card_torch_names():
    assert published_peak("NVIDIA H100 80GB HBM3", "bf16").label == "H100 SXM bf16 peak"
    assert published_peak("NVIDIA H100 80GB HBM3", "bf16").flops == 989e12
    assert published_peak("NVIDIA H100 PCIe", "fp16").flops == 756e12
    assert published_peak("NVIDIA H200", "bf16").label == "H200 SXM bf16 peak"
    assert published_peak("NVIDIA GH200 480GB", "bf16").label == "GH200 bf16 peak"
    assert published_peak("NVIDIA A100-SXM4-80GB", "bf16").flops == 312e12
    assert published_peak("NVIDIA L4", "bf16").flops == 121e12
    assert published_peak("NVIDIA L40S", "bf16").flops == 362e12
    # fp32, or a card not in the table: no published peak, so no MFU (a measured share instead)
    assert published_peak("NVIDIA H100 80GB HBM3", "fp32") is None
    assert published_peak("Tesla T4", "fp16") is None


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 600 KB filesystem (tmpfs): room for the tiny model's weights, not for a checkpoint
    (weights, Muon's momentum and AdamW's two moments: 0.96 MB)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_stops_a_checkpoint_with_one_clear_error(chunk_dir, small_disk):
    out = small_disk / "run"
    with pytest.raises(DiskFullError) as e:
        run(chunk_dir, out, "pretrain.max_steps=4", "pretrain.checkpoint_every=2")
    message = str(e.value)
    assert str(out / "checkpoints") in message and "needs 959.2 KB" in message and "free" in message, message
    assert e.value.errno == errno.ENOSPC
    assert not list((out / "checkpoints").iterdir()), "no checkpoint, whole or partial, is left"


def test_a_write_cut_short_by_a_file_size_limit_is_named_and_leaves_nothing(tmp_path):
    """safetensors and torch.save fail mid-write (EFBIG past RLIMIT_FSIZE, as ENOSPC on a disk
    that fills while writing): the error names the folder and no torn file stays."""
    tensors = {"w": torch.zeros(64, 1024)}  # 256 KB
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(DiskFullError, match=f"weights model.safetensors in {tmp_path}.*ulimit") as e:
            save_tensors(tensors, tmp_path / ckpt.WEIGHTS)
        with pytest.raises(DiskFullError, match=f"checkpoint step-000003 in {tmp_path / 'ckpts'}"):
            ckpt.save_checkpoint(tmp_path / "ckpts", 3, {"w": torch.zeros(4)}, {"m": tensors["w"]}, {}, keep=2)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert e.value.errno == errno.EFBIG
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpts"], "no partial weights or checkpoint folder"


def test_a_forced_rebuild_on_a_full_disk_leaves_the_published_artifact_whole(small_disk):
    ws = Workspace(small_disk / "ws")
    small = {"w": torch.ones(16, 1024)}  # 64 KB
    with ws.build("pretrain", "ab" * 8, config={}, inputs={}) as b:
        save_tensors(small, b.dir / ckpt.WEIGHTS)
    published = ws.artifact_dir("pretrain", "ab" * 8)
    before = {p.name: p.read_bytes() for p in published.iterdir()}
    rebuild = Workspace(small_disk / "ws", rebuild=("pretrain",))
    with pytest.raises(DiskFullError, match="no space left to write weights model.safetensors in .*partial"):
        with rebuild.build("pretrain", "ab" * 8, config={}, inputs={}) as b:
            save_tensors({"w": torch.ones(512, 1024)}, b.dir / ckpt.WEIGHTS)  # 2 MB
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before
    assert not rebuild.partial_dir("pretrain", "ab" * 8).exists()
    # a write the check could not foresee (other files fill the disk meanwhile) is named too
    (small_disk / "filler").write_bytes(b"x" * (shutil.disk_usage(small_disk).free - 16 * 1024))
    with pytest.raises(DiskFullError, match=f"no space left to write pretrain/{'ab' * 8} in"):
        with rebuild.build("pretrain", "ab" * 8, config={}, inputs={}) as b:
            (b.dir / "metrics.json").write_text(json.dumps(list(range(10_000))))
    assert {p.name: p.read_bytes() for p in published.iterdir()} == before
