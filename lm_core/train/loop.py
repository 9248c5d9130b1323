"""The pretraining loop: one process, or one rank of a torchrun job.

    plan -> model (+ DDP/FSDP) -> AdamW -> resume from the last checkpoint, if any ->
    for each step: grad-accumulated micro-batches -> clip -> step -> log
                   every eval_every: validation loss / perplexity / bits-per-byte + samples
                   every checkpoint_every: an atomic checkpoint (rank 0)
    -> final evaluation and weights

Exact resume: a checkpoint holds the weights, the optimizer, the step, every RNG state and the
data loader's position, so a run killed and resumed computes the same weights as one that never
stopped (bit for bit on CPU); and the logged history, the samples and the last evaluation (JSON
in its meta.json), so it also reports the same metrics and samples.

Throughput is shown against the card's published peak (MFU) where the card is known
(`plan.GPU_PEAK_TFLOPS`, bf16/fp16), and otherwise as a share of a matmul's FLOP/s measured here
at the model's shapes (`matmul_share`, never above 1): a CPU has no published peak to trust.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from lm_core.config import ModelConfig, PretrainConfig
from lm_core.model import GPT
from lm_core.model_folder import load_tensors, save_tensors
from lm_core.progress import NullProgress, Progress
from lm_core.token_loss import Perplexity, loss_totals
from lm_core.train import checkpoint as ckpt
from lm_core.train.loader import TrainLoader, eval_batches
from lm_core.train.optim import adamw, muon_and_adamw, scale_lrs
from lm_core.train.plan import Peak, TrainPlan, make_plan, published_peak
from lm_core.train.precision import AUTOCAST_DTYPES, NS_DTYPES, autocast_precision, autocast_to, muon_precision
from lm_core.workspace import read_manifest

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """Where metrics go (MLflow in practice); only rank 0 holds one."""

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


@dataclass
class TrainData:
    """Where the chunk stage put the blocks, and what bits-per-byte needs from its manifest."""

    train_dir: Path
    val_dir: Path
    vocab_size: int
    seq_len: int
    val_bytes_per_token: float | None  # UTF-8 bytes of text per token in the validation split
    eos_id: int = 0

    @classmethod
    def from_chunk(cls, chunk_dir: Path) -> TrainData:
        stats = read_manifest(chunk_dir)["stats"]
        val = stats.get("val", {})
        bpt = val["bytes"] / val["tokens"] if val.get("tokens") else None
        return cls(chunk_dir / "train", chunk_dir / "val", stats["vocab_size"], stats["seq_len"], bpt)


@dataclass
class TrainResult:
    plan: TrainPlan
    steps_done: int
    resumed_from: int | None
    final: dict[str, float] = field(default_factory=dict)  # last validation metrics
    history: list[dict[str, float]] = field(default_factory=list)  # one row per logged step
    samples: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    loader_wait_fraction: float = 0.0
    peak: str = ""  # what `mfu` or `matmul_share` is a share of
    matmul_share_clamped: bool = False  # a step ran faster than the measured matmul peak: shown as 1


# ----------------------------------------------------------------------------- devices and ranks


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    local_rank: int
    world_size: int
    precision: str  # the forward and backward passes': fp32, or bf16/fp16 autocast
    muon_precision: str  # Muon's Newton-Schulz steps: fp32 or bf16

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:  # None: fp32, no autocast
        return AUTOCAST_DTYPES[self.precision]

    @property
    def ns_dtype(self) -> torch.dtype:
        return NS_DTYPES[self.muon_precision]

    @property
    def use_scaler(self) -> bool:  # fp16's narrow range needs its loss scaled
        return self.precision == "fp16"


def setup_runtime(cfg: PretrainConfig) -> Runtime:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("pretrain.device is cuda but no CUDA device is available")
    device = torch.device(f"cuda:{local_rank}") if want_cuda else torch.device("cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    precision, ns_precision = autocast_precision(device, cfg.precision), muon_precision(device, cfg.muon_precision)
    return Runtime(device, rank, local_rank, world, precision, ns_precision)


def autocast(rt: Runtime) -> contextlib.AbstractContextManager:
    return autocast_to(rt.device, rt.precision)


# ----------------------------------------------------------------------------- building blocks


def rng_state() -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def unwrap(model: nn.Module) -> GPT:
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def evaluate(model: nn.Module, data: TrainData, micro_batch: int, max_batches: int, rt: Runtime) -> dict[str, float]:
    """Mean validation loss over up to `max_batches` micro-batches (all ranks together),
    perplexity, and bits-per-byte from the split's bytes per token."""
    model.eval()
    batches = eval_batches(data.val_dir, micro_batch, max_batches, rt.rank, rt.world_size)
    totals = loss_totals(model, batches, rt.device, lambda: autocast(rt))  # summed loss, tokens
    if rt.world_size > 1:
        dist.all_reduce(totals)
    model.train()
    nats, tokens = totals.tolist()
    scored_bytes = tokens * data.val_bytes_per_token if data.val_bytes_per_token else None
    score = Perplexity(nats, int(tokens), scored_bytes)
    return {f"val_{k}": v for k, v in score.metrics().items() if k != "tokens"}


@functools.cache  # one probe per process and shape: a test session or a lifecycle pays it once
def measure_matmul_flops(
    device: torch.device, dtype: torch.dtype | None, m: int, k: int, n: int, runs: int = 3, seconds: float = 0.4
) -> float:
    """The FLOP/s of an (m x k) @ (k x n) matmul on this device, here and now: the best of `runs`
    timings of `seconds` each, so that one slice of time lost to another process does not set it."""
    dt = dtype or torch.float32
    a, b = torch.randn(m, k, device=device, dtype=dt), torch.randn(k, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for _ in range(2):
        a @ b
    sync()
    best = 0.0
    for _ in range(runs):
        count, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            count += 1
            if count % 8 == 0:
                sync()
        sync()
        best = max(best, 2 * m * k * n * count / (time.perf_counter() - t0))
    return best


def throughput_peak(rt: Runtime, plan: TrainPlan) -> Peak:
    """The card's published peak when it is known; else the FLOP/s of the model's widest matmul
    (a micro-batch's tokens through the MLP's up-projection) measured on this device."""
    if rt.device.type == "cuda" and (peak := published_peak(torch.cuda.get_device_name(rt.device), rt.precision)):
        return peak
    # at least 2048 rows: a tiny micro-batch's matmul measures call overhead, not the device
    m, k, n = max(2048, plan.micro_batch * plan.model.seq_len), plan.model.n_embd, plan.model.mlp_hidden
    return Peak(measure_matmul_flops(rt.device, rt.autocast_dtype, m, k, n), "measured matmul peak", published=False)


# ----------------------------------------------------------------------------- the loop


def train(
    cfg: PretrainConfig,
    model_cfg: ModelConfig,
    data: TrainData,
    out_dir: Path,
    seed: int,
    tracker: Tracker | None = None,
    progress: Progress = NullProgress(),
    sample_fn=None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train into `out_dir` (checkpoints under `out_dir/checkpoints`, final weights in
    `out_dir/model.safetensors`), resuming from the last checkpoint there if one exists.
    `sample_fn(model, step) -> list[dict]` makes sample continuations at evaluations.
    `stop_after` ends the process's work after that many steps (tests of resume)."""
    t_start = time.time()
    rt = setup_runtime(cfg)
    plan = make_plan(cfg, model_cfg, data.vocab_size, data.seq_len, rt.world_size)
    ckpt_root = out_dir / "checkpoints"

    torch.manual_seed(seed)  # the same initial weights on every rank
    model = GPT(plan.model).to(rt.device)
    if cfg.activation_checkpointing:
        for block in model.blocks:
            block.forward = _checkpointed(block.forward)
    fsdp = rt.world_size > 1 and cfg.distributed.strategy == "fsdp"
    train_model: nn.Module = _wrap_distributed(model, cfg, rt) if rt.world_size > 1 else model
    fused, betas = rt.device.type == "cuda", (cfg.beta1, cfg.beta2)
    if plan.muon_rates is not None:
        tied = plan.model.tie_embeddings
        optimizers = muon_and_adamw(
            train_model, plan.muon_rates, tied, cfg.weight_decay, betas, fused, ns_dtype=rt.ns_dtype
        )
    else:  # after wrapping: FSDP owns the params
        optimizers = [adamw(train_model.parameters(), plan.lr, cfg.weight_decay, betas, fused)]
    schedule = plan.lr_schedule
    scaler = torch.amp.GradScaler(enabled=rt.use_scaler)

    start_step, resumed_from, loader_state = 0, None, None
    history: list[dict[str, float]] = []
    samples: list[dict[str, Any]] = []
    final: dict[str, float] = {}
    done = ckpt.step_dirs(ckpt_root)
    if done:
        last = done[-1]
        state = ckpt.load_train_state(last)
        weights = load_tensors(last / ckpt.WEIGHTS)
        if plan.model.tie_embeddings:
            weights.setdefault("lm_head.weight", weights["embed.weight"])
        set_state_dict(
            train_model,
            optimizers,
            model_state_dict=weights,
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        loader_state = state["loader"][rt.rank] if rt.rank < len(state["loader"]) else None
        meta = ckpt.read_meta(last)
        start_step = resumed_from = meta["step"]
        history, samples, final = meta.get("history", []), meta.get("samples", []), meta.get("final", {})
    if cfg.compile:
        train_model = torch.compile(train_model)

    loader = TrainLoader(
        data.train_dir, plan.micro_batch, seed, rt.rank, rt.world_size, rt.device, cfg.prefetch, loader_state
    )
    if rt.is_main and tracker is not None:
        precision = {"plan.precision": rt.precision}
        if plan.muon_rates:
            precision["plan.muon_precision"] = rt.muon_precision
        tracker.log_params({**plan.to_params(), **precision})
    peak = throughput_peak(rt, plan) if rt.is_main else None
    clamped = False

    progress.start(plan.steps, "steps")
    progress.advance(start_step)
    step = start_step
    window_t, window_tokens, wait_before = time.perf_counter(), 0, 0.0
    stop_at = plan.steps if stop_after is None else min(plan.steps, start_step + stop_after)
    try:
        while step < stop_at:
            lr = schedule.lr_at(step)
            scale_lrs(optimizers, lr / schedule.peak)
            loss_sum = torch.zeros((), device=rt.device)
            for micro in range(plan.grad_accum):
                x, y = loader.next()
                sync = micro == plan.grad_accum - 1  # ranks exchange gradients on the last micro-batch only
                if fsdp:
                    model.set_requires_gradient_sync(sync)
                with contextlib.nullcontext() if sync or rt.world_size == 1 or fsdp else train_model.no_sync():
                    with autocast(rt):
                        _, loss = train_model(x, y)
                    scaler.scale(loss / plan.grad_accum).backward()
                loss_sum += loss.detach()
            for optimizer in optimizers:
                scaler.unscale_(optimizer)
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            if hasattr(grad_norm, "full_tensor"):  # FSDP2: a sharded norm, made whole
                grad_norm = grad_norm.full_tensor()
            for optimizer in optimizers:
                scaler.step(optimizer)
                optimizer.zero_grad(set_to_none=True)
            scaler.update()
            step += 1
            window_tokens += plan.total_batch_tokens
            progress.advance()

            if step % cfg.log_every == 0 or step == plan.steps:  # not at stop_at: a stopped run logs the same steps
                loss_value = loss_sum / plan.grad_accum
                if rt.world_size > 1:
                    dist.all_reduce(loss_value, op=dist.ReduceOp.AVG)
                elapsed = time.perf_counter() - window_t
                tok_s = window_tokens / elapsed
                row = {
                    "step": step,
                    "loss": loss_value.item(),
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": tok_s,
                    "tokens": step * plan.total_batch_tokens,
                    "loader_wait_fraction": (loader.wait_seconds - wait_before) / elapsed,
                }
                if peak is not None:
                    share = plan.flops_per_token * tok_s / rt.world_size / peak.flops
                    if share > 1 and not peak.published:
                        if not clamped:
                            log.info(  # the progress line says "(clamped)"; a note, not a fault
                                "training ran at %.0f%% of the %s: the probe under-measured this device "
                                "(another process took it?); matmul_share is clamped to 1",
                                100 * share,
                                peak.label,
                            )
                        share, clamped = 1.0, True
                    row[peak.metric] = share
                history.append(row)
                if rt.is_main and tracker is not None:
                    tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step)
                _describe(progress, row, peak, clamped)
                window_t, window_tokens, wait_before = time.perf_counter(), 0, loader.wait_seconds

            if step % cfg.eval_every == 0 or step == plan.steps:
                final = evaluate(train_model, data, plan.micro_batch, cfg.eval_batches, rt)
                if rt.is_main and tracker is not None and final:
                    tracker.log_metrics(final, step)
                if history and history[-1]["step"] == step:
                    history[-1].update(final)
                else:
                    history.append({"step": step, "tokens": step * plan.total_batch_tokens, **final})
                if rt.is_main and sample_fn is not None and not fsdp:  # FSDP ranks hold shards, not the model
                    samples.extend(sample_fn(model, step))

            if step % cfg.checkpoint_every == 0 or step == stop_at:
                progress_so_far = {"history": history, "samples": samples, "final": final}
                _checkpoint(ckpt_root, step, train_model, optimizers, scaler, loader, plan, cfg, rt, progress_so_far)
    finally:
        loader.close()

    if step == plan.steps:
        weights, _ = full_state(train_model, None)
        if rt.is_main:
            save_tensors(weights, out_dir / ckpt.WEIGHTS)
    if rt.world_size > 1:
        dist.barrier()
    total_time = time.time() - t_start
    return TrainResult(
        plan=plan,
        steps_done=step,
        resumed_from=resumed_from,
        final=final,
        history=history,
        samples=samples,
        seconds=total_time,
        loader_wait_fraction=loader.wait_seconds / max(total_time, 1e-9),
        peak=peak.label if peak is not None else "",
        matmul_share_clamped=clamped,
    )


def _describe(progress: Progress, row: dict[str, float], peak: Peak | None, clamped: bool) -> None:
    """e.g. "loss 3.120 | 41,200 tok/s | MFU 41% of H100 SXM bf16 peak", or on a CPU
    "... | 62% of measured matmul peak"."""
    text = f"loss {row['loss']:.3f} | {row['tokens_per_s']:,.0f} tok/s"
    if peak is not None and peak.metric in row:
        share = f"{100 * row[peak.metric]:.0f}% of {peak.label}"
        text += f" | MFU {share}" if peak.published else f" | {share}" + (" (clamped)" if clamped else "")
    progress.describe(text)


def full_state(train_model: nn.Module, optimizers) -> tuple[dict, dict]:
    """Whole (unsharded) weights and optimizer state keyed by parameter names, on the CPU: the
    same for one process, DDP and FSDP (where every rank must call it: it gathers shards)."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model = _unwrap_compiled(train_model)
    if optimizers is None:
        weights, optim = get_model_state_dict(model, options=opts), {}
    else:
        weights, optim = get_state_dict(model, optimizers, options=opts)
    if unwrap(model).cfg.tie_embeddings:  # gathered copies no longer share storage: store the tie once
        weights.pop("lm_head.weight", None)
    return weights, optim


def _checkpoint(root, step, train_model, optimizers, scaler, loader, plan, cfg, rt, so_far: dict[str, Any]) -> None:
    """`so_far`: the history, samples and last evaluation until `step`, kept in meta.json (JSON)."""
    loader_states = [loader.state.to_dict()]
    if rt.world_size > 1:  # each rank's data position; rank 0 writes them all
        gathered: list[dict] = [None] * rt.world_size  # type: ignore[list-item]
        dist.all_gather_object(gathered, loader.state.to_dict())
        loader_states = gathered
    weights, optim_state = full_state(train_model, optimizers)
    if rt.is_main:
        state = {
            "optimizer": optim_state,
            "scaler": scaler.state_dict() if rt.use_scaler else {},
            "rng": rng_state(),
            "loader": loader_states,
        }
        meta = {"tokens": step * plan.total_batch_tokens, "model": plan.model.to_dict(), **so_far}
        ckpt.save_checkpoint(root, step, weights, state, meta, cfg.keep_checkpoints)
    if rt.world_size > 1:
        dist.barrier()


def _unwrap_compiled(m: nn.Module) -> nn.Module:
    return getattr(m, "_orig_mod", m)


def _wrap_distributed(model: GPT, cfg: PretrainConfig, rt: Runtime) -> nn.Module:
    if cfg.distributed.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh  # only for FSDP
        from torch.distributed.fsdp import fully_shard

        # FSDP2: each block's parameters (then the rest, at the root) sharded across ranks, with
        # their gradients and optimizer state; works on GPUs (NCCL) and on CPU (gloo).
        mesh = init_device_mesh(rt.device.type, (rt.world_size,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)


def _checkpointed(forward):
    from torch.utils.checkpoint import checkpoint

    def run(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
