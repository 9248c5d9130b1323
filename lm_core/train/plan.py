"""From the config to the concrete numbers of a training run: model shape, batch, steps, rates.

Everything the `depth` dial derives is computed here, once, and logged as the run's params, so
a run can be read back without re-deriving anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from lm_core.config import ModelConfig, PretrainConfig
from lm_core.model import GPT, GPTConfig
from lm_core.train.optim import MuonRates, Schedule


@dataclass(frozen=True)
class TrainPlan:
    model: GPTConfig
    world_size: int
    micro_batch: int  # sequences per forward, per rank
    grad_accum: int  # micro-batches per optimizer step, per rank
    total_batch_tokens: int  # tokens per optimizer step, all ranks
    steps: int
    token_budget: int
    optimizer: str  # adamw | muon
    lr: float  # peak rate; muon: of the matrices
    muon_rates: MuonRates | None  # muon: every group's peak rate
    min_lr: float
    warmup_steps: int
    schedule: str
    decay_steps: int  # wsd: steps of the final decay
    params: int
    flops_per_token: float

    @property
    def lr_schedule(self) -> Schedule:
        return Schedule(self.lr, self.min_lr, self.warmup_steps, self.steps, self.schedule == "wsd", self.decay_steps)

    def to_params(self) -> dict[str, object]:
        """Derived values as MLflow params: `plan.*`, and the model's resolved shape as `gpt.*`
        (beside the config's own `model.*`, which may leave them unset)."""
        out = {f"plan.{k}": v for k, v in asdict(self).items() if k not in ("model", "muon_rates")}
        if self.muon_rates is not None:
            out.update({f"plan.{k}_lr": v for k, v in asdict(self.muon_rates).items()})
        out.update({f"gpt.{k}": v for k, v in self.model.to_dict().items()})
        return out


def model_config(cfg: ModelConfig, vocab_size: int, seq_len: int) -> GPTConfig:
    shape = cfg.shape()
    depth = shape.pop("depth")
    return GPTConfig.from_depth(
        depth,
        vocab_size,
        seq_len,
        tie_embeddings=cfg.tie_embeddings,
        rope_theta=cfg.rope_theta,
        qk_norm=cfg.qk_norm,
        zero_init_out=cfg.zero_init_out,
        **shape,
    )


def make_plan(
    cfg: PretrainConfig, model_cfg: ModelConfig, vocab_size: int, seq_len: int, world_size: int = 1
) -> TrainPlan:
    gpt = model_config(model_cfg, vocab_size, seq_len)
    probe = GPT(gpt)  # cheap at init scale; gives the exact parameter and FLOP counts
    params = probe.num_params()
    fpt = probe.flops_per_token(seq_len)
    del probe

    per_micro_step = cfg.micro_batch * seq_len * world_size
    total = cfg.total_batch_tokens or per_micro_step
    if total % per_micro_step:
        raise ValueError(
            f"pretrain.total_batch_tokens ({total}) must be a multiple of micro_batch x seq_len x ranks "
            f"({cfg.micro_batch} x {seq_len} x {world_size} = {per_micro_step})"
        )
    grad_accum = total // per_micro_step
    budget = cfg.token_budget or int(cfg.tokens_per_param * params)
    steps = cfg.max_steps or max(1, math.ceil(budget / total))
    muon_rates = None
    if cfg.optimizer == "muon":
        muon_rates = MuonRates.for_width(gpt.n_embd, cfg.lr, cfg.embedding_lr, cfg.head_lr, cfg.gain_lr)
        lr = muon_rates.matrix
    else:
        lr = cfg.lr or 0.02 / math.sqrt(gpt.n_embd)
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    else:  # Muon's orthogonalised steps need no warmup (nanochat's recipe has none); Adam's early ones do
        warmup = 0 if cfg.optimizer == "muon" else min(200, int(0.05 * steps))
    return TrainPlan(
        model=gpt,
        world_size=world_size,
        micro_batch=cfg.micro_batch,
        grad_accum=grad_accum,
        total_batch_tokens=total,
        steps=steps,
        token_budget=steps * total,
        optimizer=cfg.optimizer,
        lr=lr,
        muon_rates=muon_rates,
        min_lr=lr * cfg.min_lr_ratio,
        warmup_steps=min(warmup, steps),
        schedule=cfg.schedule,
        decay_steps=max(1, int(cfg.decay_fraction * steps)),
        params=params,
        flops_per_token=fpt,
    )


# ----------------------------------------------------------------------------- throughput peaks

# Dense (no sparsity) bf16/fp16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets: the
# denominator of MFU. The first row whose words all appear among the words of
# `torch.cuda.get_device_name()` names the card ("NVIDIA H100 80GB HBM3" is the SXM card).
GPU_PEAK_TFLOPS: tuple[tuple[tuple[str, ...], str, float], ...] = (
    (("H100", "PCIe"), "H100 PCIe", 756),
    (("H100", "NVL"), "H100 NVL", 835),
    (("H100",), "H100 SXM", 989),
    (("GH200",), "GH200", 989),
    (("H200", "NVL"), "H200 NVL", 835),
    (("H200",), "H200 SXM", 989),
    (("B200",), "B200", 2250),
    (("A100",), "A100", 312),
    (("L40S",), "L40S", 362),
    (("L40",), "L40", 181),
    (("L4",), "L4", 121),
    (("A10",), "A10", 125),
)


@dataclass(frozen=True)
class Peak:
    """What a training's FLOP/s are compared with: a card's published peak (then the share is
    MFU), or a matmul's FLOP/s measured on this device (then it is a share of that, not MFU)."""

    flops: float  # FLOP/s of one device
    label: str  # "H100 SXM bf16 peak" or "measured matmul peak"
    published: bool

    @property
    def metric(self) -> str:
        return "mfu" if self.published else "matmul_share"


def published_peak(device_name: str, precision: str) -> Peak | None:
    """The published dense peak of a GPU named `device_name` at `precision` ("bf16"/"fp16");
    None for fp32, a CPU, or a card not in GPU_PEAK_TFLOPS."""
    if precision not in ("bf16", "fp16"):
        return None
    words = set(re.split(r"[^A-Za-z0-9]+", device_name))
    for needed, card, tflops in GPU_PEAK_TFLOPS:
        if words.issuperset(needed):
            return Peak(tflops * 1e12, f"{card} {precision} peak", published=True)
    return None
