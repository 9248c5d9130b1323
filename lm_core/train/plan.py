"""From the config to the concrete numbers of a training run: model shape, batch, steps, rates.

Everything the `depth` dial derives is computed here, once, and logged as the run's params, so
a run can be read back without re-deriving anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lm_core.config import ModelConfig, PretrainConfig
from lm_core.model import GPT, GPTConfig
from lm_core.train.optim import Schedule


@dataclass(frozen=True)
class TrainPlan:
    model: GPTConfig
    world_size: int
    micro_batch: int  # sequences per forward, per rank
    grad_accum: int  # micro-batches per optimizer step, per rank
    total_batch_tokens: int  # tokens per optimizer step, all ranks
    steps: int
    token_budget: int
    lr: float
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
        out = {f"plan.{k}": v for k, v in asdict(self).items() if k != "model"}
        out.update({f"gpt.{k}": v for k, v in self.model.to_dict().items()})
        return out


def model_config(cfg: ModelConfig, vocab_size: int, seq_len: int) -> GPTConfig:
    shape = cfg.shape()
    depth = shape.pop("depth")
    return GPTConfig.from_depth(
        depth, vocab_size, seq_len, tie_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta, **shape
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
    lr = cfg.lr or 0.02 / math.sqrt(gpt.n_embd)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(200, int(0.05 * steps))
    return TrainPlan(
        model=gpt,
        world_size=world_size,
        micro_batch=cfg.micro_batch,
        grad_accum=grad_accum,
        total_batch_tokens=total,
        steps=steps,
        token_budget=steps * total,
        lr=lr,
        min_lr=lr * cfg.min_lr_ratio,
        warmup_steps=min(warmup, steps),
        schedule=cfg.schedule,
        decay_steps=max(1, int(cfg.decay_fraction * steps)),
        params=params,
        flops_per_token=fpt,
    )
