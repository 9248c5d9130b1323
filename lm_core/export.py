"""Export a trained model as a Hugging Face folder that `transformers` loads as
`LlamaForCausalLM` (or `Qwen3ForCausalLM` when it normalises queries and keys), with its tokenizer.

Our GPT is laid out like Llama (RMSNorm, rotary embeddings in the rotate-half layout, SwiGLU,
no biases), so export is a renaming of tensors plus a `config.json`; nothing is converted.

Any model `lmforge generate` loads exports: the caller resolves the spec (`latest`, a
fingerprint, `models:/...`, a folder) to a `TextModel` and hands it here. A fine-tuned chat
model (its LoRA already merged into the weights it stores) exports with its chat template in
Jinja (`tokenizer_config.json`'s `chat_template`, so `apply_chat_template` gives lmforge's own
token ids) and `<|end|>` as its end-of-sequence token, so `generate` stops after the reply. An
int8-compressed copy is refused: transformers has no loader for its format, and its
full-precision original exports instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from lm_core.model import GPTConfig
from lm_core.model_folder import INT8_WEIGHTS, MODEL_FILES, WEIGHTS
from lm_core.textgen import TextModel
from lm_core.tokenize.chat_template import END, END_OF_TEXT, JINJA_TEMPLATE, PAD


class ExportError(ValueError):
    """A model that cannot be exported, or a destination that must not be written; the message says why."""


_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}


def hf_name(name: str) -> str:
    if name == "embed.weight":
        return "model.embed_tokens.weight"
    if name == "norm.weight":
        return "model.norm.weight"
    if name == "lm_head.weight":
        return "lm_head.weight"
    _, layer, rest = name.split(".", 2)  # blocks.<i>.<rest>
    return f"model.layers.{layer}.{_BLOCK_NAMES[rest]}"


def hf_config(cfg: GPTConfig, bos_id: int, eos_id: int, pad_id: int) -> dict:
    """Llama's config; Qwen3's (Llama's layout plus a per-head RMSNorm of queries and keys, whose
    gains are ones here) for a model trained with `qk_norm`."""
    arch = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "use_sliding_window": False}
    if not cfg.qk_norm:
        arch = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    return {
        **arch,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.mlp_hidden,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def export_hf(model: TextModel | str | Path, out_dir: str | Path) -> Path:
    """Write `model` (a loaded model, or a model folder: a pretrain or finetune artifact) to
    `out_dir` as a transformers folder, atomically: a previous export there is replaced whole,
    any other existing folder is refused."""
    out_dir = Path(out_dir)
    if not isinstance(model, TextModel):
        model = _load_folder(Path(model))
    if model.quantized:
        raise ExportError(
            f"{model.source} holds int8 weights (an int8-compressed copy), which transformers cannot load: "
            "export the full-precision model it was compressed from (its finetune artifact's fingerprint, "
            "or the registered version without the @int8 alias)"
        )
    _check_destination(out_dir)
    cfg, tok = model.model.cfg, model.tokenizer
    state = model.model.state_dict()
    renamed = {
        hf_name(k): v.detach().cpu().contiguous()
        for k, v in state.items()
        if not (cfg.tie_embeddings and k == "lm_head.weight")
    }
    if cfg.qk_norm:  # Qwen3's query and key norms carry gains; ours have none, so ones
        for i in range(cfg.n_layer):
            for which in ("q_norm", "k_norm"):
                renamed[f"model.layers.{i}.self_attn.{which}.weight"] = torch.ones(cfg.head_dim)
    eot, pad = END_OF_TEXT, PAD
    eos = END if model.is_chat else eot  # a chat model's reply ends at <|end|>
    ids = {t: tok.token_to_id(t) for t in (eot, END, pad)}
    stop = [ids[END], ids[eot]] if model.is_chat else ids[eot]  # generate stops at the first of these

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(renamed, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, ids[eot], ids[eos], ids[pad]), indent=2))
    generation = {"bos_token_id": ids[eot], "eos_token_id": stop, "pad_token_id": ids[pad]}
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
    (tmp / "tokenizer.json").write_text(tok.to_str())
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.seq_len,
        "bos_token": eot,
        "eos_token": eos,
        "pad_token": pad,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    if model.is_chat:
        tok_cfg["chat_template"] = JINJA_TEMPLATE
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (tmp / "special_tokens_map.json").write_text(json.dumps({"bos_token": eot, "eos_token": eos, "pad_token": pad}))
    _replace(tmp, out_dir)
    return out_dir


def _load_folder(folder: Path) -> TextModel:
    if (folder / INT8_WEIGHTS).is_file() and not (folder / WEIGHTS).is_file():
        return TextModel.load(folder)  # refused above, by name
    for name in MODEL_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} has no {name}: not a trained model folder")
    return TextModel.load(folder)


def _check_destination(out_dir: Path) -> None:
    """Export replaces only what an export wrote: never a file, nor a folder of something else."""
    if out_dir.is_file():
        raise ExportError(f"{out_dir} is a file: name a folder to write the model to")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise ExportError(f"{out_dir} exists and does not hold an exported model: name a new or empty folder")


def _replace(tmp: Path, out_dir: Path) -> None:
    """Move the finished export into place; a previous one is moved aside first and then removed,
    so that a crash leaves one whole export (old or new) and no mix of the two."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
