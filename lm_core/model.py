"""The GPT, in one file.

A decoder-only transformer in today's proven form, laid out exactly like Llama so that it
exports to `transformers.LlamaForCausalLM` weight for weight:

    tokens -> embedding -> n_layer x [RMSNorm -> causal self-attention (RoPE) -> + residual
                                      RMSNorm -> SwiGLU MLP                   -> + residual]
           -> RMSNorm -> linear head (optionally tied to the embedding) -> logits

In training the head and the loss are one chunked function (`LinearCrossEntropy`): the logits of
every token at once are never made.

No biases anywhere. Attention goes through `scaled_dot_product_attention` (flash kernels on GPU);
grouped-query attention when `n_kv_head < n_head`. One size dial, `depth`, derives the rest
(`GPTConfig.from_depth`), as nanochat does. Generation uses a KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 8192
    seq_len: int = 256  # the longest context trained on (and the RoPE table's length)
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4  # < n_head: grouped-query attention
    n_embd: int = 256
    mlp_hidden: int = 0  # SwiGLU width; 0: about 8/3 of n_embd, rounded up to a multiple of 64
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False  # RMS-normalise each head's queries and keys (no gain): steadier logits
    zero_init_out: bool = False  # residual branches' output projections start at zero (nanochat)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("the head dimension must be even (rotary embeddings rotate pairs)")
        if not self.mlp_hidden:
            self.mlp_hidden = 64 * math.ceil(8 * self.n_embd / 3 / 64)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_depth(cls, depth: int, vocab_size: int, seq_len: int, **overrides) -> GPTConfig:
        """nanochat's dial: width 64 per layer, heads of 128 (fewer for narrow models)."""
        n_embd = 64 * depth
        head_dim = 128 if n_embd >= 512 else 64
        n_head = max(1, n_embd // head_dim)
        values = dict(
            vocab_size=vocab_size, seq_len=seq_len, n_layer=depth, n_head=n_head, n_kv_head=n_head, n_embd=n_embd
        )
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for every position, in Llama's layout (each frequency used for dims i and i+d/2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (B or 1, 1, T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


def rolled_rope_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin with rotate-half's signs folded in (-sin on the first half), for `apply_rope_rolled`."""
    half = sin.size(-1) // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def apply_rope_rolled(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """apply_rope, bit for bit, in fewer ops: with the signs in `signed_sin`, rotating half is
    one roll instead of chunk, neg and cat (decoding one token at a time pays per op)."""
    return x * cos + x.roll(x.size(-1) // 2, dims=-1) * signed_sin


def qk_normed(x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),), eps=eps)


class KVCache:
    """Keys and values of every layer for a batch being generated, preallocated to `max_len`."""

    def __init__(self, cfg: GPTConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.length = 0  # positions filled so far (the same for every row)
        self.max_len = max_len

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.size(2)
        self.k[layer][:, :, self.length : self.length + t] = k
        self.v[layer][:, :, self.length : self.length + t] = v
        end = self.length + t
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.qk_eps = cfg.norm_eps if cfg.qk_norm else None
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, mask=None, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_eps is not None:  # before RoPE (as Qwen3): a rotation keeps the norm, so either order is one
            q, k = qk_normed(q, self.qk_eps), qk_normed(k, self.qk_eps)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.store(self.layer, k, v)
        gqa = self.n_kv_head != self.n_head
        if mask is None:
            # Training and prefill: plain causal attention (the flash path on GPU). One new token
            # with a cache: it may see every cached position, so no mask at all.
            causal = q.size(2) > 1
            if causal and q.size(2) != k.size(2):
                raise ValueError("causal attention over a partly filled cache needs an explicit mask")
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.up_proj = nn.Linear(cfg.n_embd, cfg.mlp_hidden, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask=None, cache=None) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.mlp(self.mlp_norm(x))

    def decoder(self) -> Callable[..., torch.Tensor]:
        """forward() for one new token per row (x: (B, 1, C)) at column `pos` of the cache, as a
        function. Decoding at batch 1 costs ops and Python lookups more than arithmetic, so this
        closes over the block's weights once per generate() call (no module attribute lookups or
        calls per step) and cuts the general path's detours: with T = 1 a (B, 1, H*D) projection
        already is (B, H, 1, D) in memory (views, no transposes), the new key and value go
        straight into the cache, and a lone query needs no causal mask (only `key_mask`, hiding
        left padding; None without any). `sin` is `rolled_rope_sin`'s."""
        attn, mlp = self.attn, self.mlp
        H, KV, D, layer = attn.n_head, attn.n_kv_head, attn.head_dim, attn.layer
        q_proj, k_proj, v_proj, o_proj = (_matmul(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj))
        gate_proj, up_proj, down_proj = (_matmul(m) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
        attn_norm, mlp_norm = _rms_norm(self.attn_norm), _rms_norm(self.mlp_norm)
        gqa, qk_eps = KV != H, attn.qk_eps
        qk = (lambda t: t) if qk_eps is None else (lambda t: qk_normed(t, qk_eps))

        def decode(x, cos, sin, key_mask, cache: KVCache, pos: int) -> torch.Tensor:
            B = x.size(0)
            h = attn_norm(x)
            q = apply_rope_rolled(qk(q_proj(h).view(B, H, 1, D)), cos, sin)
            keys, values = cache.k[layer], cache.v[layer]
            keys.narrow(2, pos, 1).copy_(apply_rope_rolled(qk(k_proj(h).view(B, KV, 1, D)), cos, sin))
            values.narrow(2, pos, 1).copy_(v_proj(h).view(B, KV, 1, D))
            keys, values = keys.narrow(2, 0, pos + 1), values.narrow(2, 0, pos + 1)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=key_mask, enable_gqa=gqa)
            x = x + o_proj(y.view(B, 1, H * D))
            h = mlp_norm(x)
            return x + down_proj(F.silu(gate_proj(h)) * up_proj(h))

        return decode


def _matmul(linear: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`linear` as a plain function for Block.decoder: F.linear on its weight for an nn.Linear
    (skipping nn.Module.__call__ and its hooks, a good part of a small matmul's cost), the module
    itself otherwise (LoRA, int8: whatever they compute)."""
    if type(linear) is nn.Linear:
        weight, bias = linear.weight, linear.bias
        return lambda x: F.linear(x, weight, bias)
    return linear


def _rms_norm(norm: RMSNorm) -> Callable[[torch.Tensor], torch.Tensor]:
    """`norm` as a plain function, for the same reason as `_matmul`."""
    weight, eps = norm.weight, norm.eps
    return lambda x: F.rms_norm(x, weight.shape, weight, eps)


def _linear_cross_entropy(h, w, targets, weights, chunk: int, grad_h=None, grad_w=None) -> torch.Tensor:
    """sum_i weights_i * cross_entropy(h_i @ w.T, targets_i), `chunk` rows of logits at a time; with
    `grad_h`/`grad_w` given, fills them with that sum's gradients on the way (see LinearCrossEntropy)."""
    loss = torch.zeros((), dtype=torch.float32, device=h.device)
    for start in range(0, h.size(0), chunk):
        rows = slice(start, start + chunk)
        hc, tc, wc = h[rows], targets[rows], weights[rows]
        logits = (hc @ w.mT).float()
        lse = torch.logsumexp(logits, dim=-1)
        loss += (wc * (lse - logits.gather(1, tc[:, None]).squeeze(1))).sum()
        if grad_h is None and grad_w is None:
            continue
        g = logits.sub_(lse[:, None]).exp_()  # the softmax, in the logits' place
        g.scatter_add_(1, tc[:, None], torch.full_like(wc[:, None], -1.0))  # minus the one-hot target
        g = g.mul_(wc[:, None]).to(h.dtype)
        if grad_h is not None:
            grad_h[rows] = g @ w
        if grad_w is not None:
            grad_w += (g.mT @ hc).float()
    return loss


class LinearCrossEntropy(torch.autograd.Function):
    """The output layer and the loss in one: the loss ends the graph, so each chunk's softmax
    turns into its gradients right away and the (tokens x vocabulary) logits never exist whole (a
    65k vocabulary's would take gigabytes) nor pass through separate log-softmax, loss and
    backward kernels. Computes in `h`'s dtype (the autocast one), sums in fp32."""

    @staticmethod
    def forward(ctx, h, w, targets, weights, chunk: int):
        grad_h = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if ctx.needs_input_grad[1] else None
        loss = _linear_cross_entropy(h, w, targets, weights, chunk, grad_h, grad_w)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.w_dtype = w.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w = ctx.saved_tensors
        dh = grad_h * grad_loss.to(grad_h.dtype) if grad_h is not None else None
        dw = (grad_w * grad_loss).to(ctx.w_dtype) if grad_w is not None else None
        return dh, dw, None, None, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor):
    """(N, C) hidden states through the (V, C) output layer into the weighted sum of the N targets'
    cross-entropies, the logits made 4M at a time on a CPU (16 MB; of 2M, 4M and 16M, the fastest
    there) and 64M on a GPU (256 MB: large matmuls; not yet measured on one). Without gradients
    (evaluation): the same chunks, nothing kept."""
    chunk = max(64, (1 << (26 if h.is_cuda else 22)) // w.size(0))
    if torch.is_grad_enabled() and (h.requires_grad or w.requires_grad):
        return LinearCrossEntropy.apply(h, w, targets, weights, chunk)
    return _linear_cross_entropy(h, w, targets, weights, chunk)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaling: each residual branch's output projection shrinks with depth so the
        # residual stream's variance does not grow with the number of layers.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                if cfg.zero_init_out:  # each block starts as the identity; its gradient still flows
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        loss_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) token ids. `loss_mask` (B, T), if given, selects the target
        positions that count (fine-tuning on assistant tokens only). Returns (logits, None) without
        targets, (None, mean loss) with them: the loss is computed without whole logits."""
        B, T = idx.shape
        if T > self.cfg.seq_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's context ({self.cfg.seq_len})")
        cos, sin = self.rope_cos[:T][None, None], self.rope_sin[:T][None, None]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        h = self.norm(x)
        if targets is None:
            return self.lm_head(h), None
        if loss_mask is None:
            weights = torch.full((B * T,), 1 / (B * T), device=idx.device)
        else:
            m = loss_mask.reshape(-1).float()
            weights = m / m.sum().clamp(min=1)
        if type(self.lm_head) is not nn.Linear:  # LoRA, int8: through their own forward
            logits = self.lm_head(h).float().view(B * T, -1)
            return None, (F.cross_entropy(logits, targets.reshape(-1), reduction="none") * weights).sum()
        w = self.lm_head.weight
        if torch.is_autocast_enabled(h.device.type):  # what autocast would have made of the head's matmul
            dtype = torch.get_autocast_dtype(h.device.type)
            h, w = h.to(dtype), w.to(dtype)
        return None, linear_cross_entropy(h.reshape(B * T, -1), w, targets.reshape(-1), weights)

    # ------------------------------------------------------------------ accounting

    def num_params(self, exclude_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embedding:
            n -= self.embed.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward): 6 per non-embedding parameter (PaLM's
        estimate, counting the head) plus attention's score and value products."""
        T = seq_len or self.cfg.seq_len
        n = self.num_params(exclude_embedding=True) + (self.embed.weight.numel() if self.cfg.tie_embeddings else 0)
        attn = 12 * self.cfg.n_layer * self.cfg.n_head * self.cfg.head_dim * T
        return 6 * n + attn

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop_tokens: tuple[int, ...] = (),
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> list[list[int]]:
        """Continue each prompt (a batch of different lengths, left-padded) by up to
        `max_new_tokens`. temperature 0 is greedy. A row stops at its first stop token (which is
        not returned). Returns the new tokens of each row."""
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        device = self.embed.weight.device
        B, longest = len(prompts), max(len(p) for p in prompts)
        total = longest + max_new_tokens
        if total > self.cfg.seq_len:
            raise ValueError(
                f"prompt ({longest}) + new tokens ({max_new_tokens}) exceed the context ({self.cfg.seq_len})"
            )
        pad = torch.tensor([longest - len(p) for p in prompts], device=device)
        # Every row's tokens: the prompt (left-padded), then the new ones as they come.
        tokens = torch.zeros(B, total, dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            tokens[i, longest - len(p) : longest] = torch.tensor(p, device=device)
        cols = torch.arange(total, device=device)
        positions = mask = None
        if bool(pad.any()):
            # Row i's real tokens start at column pad[i]: they get positions 0, 1, ... and may
            # not attend to the padding before them (padding rows attend to themselves only).
            positions = (cols[None, :] - pad[:, None]).clamp(min=0)  # (B, total)
            visible = cols[None, :] >= pad[:, None]  # key columns that hold real tokens
            causal = torch.ones(total, total, dtype=torch.bool, device=device).tril()
            mask = causal[None] & visible[:, None, :]  # (B, total, total)
            mask |= torch.eye(total, dtype=torch.bool, device=device)[None]

        cache = KVCache(self.cfg, B, total, device, self.embed.weight.dtype) if use_cache else None
        if cache is not None:
            # What the one-token decode steps need, built once and sliced per step: the blocks as
            # functions, the rotary angles of every row's columns, the keys each row may see.
            blocks = [block.decoder() for block in self.blocks]
            final_norm, lm_head = _rms_norm(self.norm), _matmul(self.lm_head)
            at = positions if positions is not None else cols[None, :]
            step_cos = self.rope_cos[at][:, None]  # (B or 1, 1, total, D)
            step_sin = rolled_rope_sin(self.rope_sin)[at][:, None]
            key_mask = visible[:, None, None, :] if positions is not None else None  # (B, 1, 1, total)
        stops = torch.tensor(stop_tokens, device=device) if stop_tokens else None
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        steps = 0
        for end in range(longest, longest + max_new_tokens):  # `end`: the column being generated
            if cache is None:  # no cache: a full forward over the whole prefix, every step
                logits = self._forward_window(tokens[:, :end], 0, end, positions, mask, None)
            elif cache.length == 0:  # prefill: the prompt in one forward, filling the cache
                logits = self._forward_window(tokens[:, :end], 0, end, positions, mask, cache)
                cache.length = end
            else:  # decode: only the newest token, attending to the cache
                pos = end - 1
                x = self.embed(tokens[:, pos : pos + 1])
                cos, sin = step_cos.narrow(2, pos, 1), step_sin.narrow(2, pos, 1)
                m = key_mask.narrow(3, 0, end) if key_mask is not None else None
                for decode in blocks:
                    x = decode(x, cos, sin, m, cache, pos)
                logits = lm_head(final_norm(x))
                cache.length = end
            nxt = sample(logits[:, -1, :], temperature, top_k, top_p, generator)
            tokens[:, end] = nxt
            steps += 1
            if stops is not None:
                finished |= torch.isin(nxt, stops)
                if bool(finished.all()):
                    break
        out = []
        for row in tokens[:, longest : longest + steps].tolist():  # each row up to its first stop token
            cut = next((i for i, t in enumerate(row) if t in stop_tokens), len(row))
            out.append(row[:cut])
        return out

    def _forward_window(self, idx, start, end, positions, mask, cache) -> torch.Tensor:
        """Logits for the last of positions start..end-1 (the new ones when a cache holds the rest):
        generation samples from the last position only, so only it goes through the head."""
        if positions is None:  # no padding: every row's positions are the columns
            cos, sin = self.rope_cos[start:end][None, None], self.rope_sin[start:end][None, None]
            attn_mask = None
        else:
            cos = self.rope_cos[positions[:, start:end]][:, None]  # (B, 1, T, D)
            sin = self.rope_sin[positions[:, start:end]][:, None]
            attn_mask = mask[:, None, start:end, :end]  # (B, 1, Tq, Tk)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin, attn_mask, cache)
        return self.lm_head(self.norm(x[:, -1:, :]))


def sample(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row from (B, V) logits: greedy at temperature 0, else top-k / nucleus."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
