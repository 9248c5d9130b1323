"""Export a trained model as a Hugging Face folder that `transformers` loads as
`LlamaForCausalLM`, with its tokenizer.

Our GPT is laid out like Llama (RMSNorm, rotary embeddings in the rotate-half layout, SwiGLU,
no biases), so export is a renaming of tensors plus a `config.json`; nothing is converted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from lm_core.model import GPTConfig
from lm_core.model_folder import MODEL_FILES, TOKENIZER, WEIGHTS, read_config
from lm_core.tokenize.bpe import SPECIAL_TOKENS

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


def llama_config(cfg: GPTConfig, eos_id: int, pad_id: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
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
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


def export_hf(model_dir: Path, out_dir: Path) -> Path:
    """`model_dir` holds model.safetensors, model_config.json and tokenizer.json (a pretrain or
    fine-tune artifact). Writes `out_dir` atomically."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    for name in MODEL_FILES:
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir} has no {name}: not a trained model folder")
    cfg = read_config(model_dir)
    eos, pad = SPECIAL_TOKENS[0], SPECIAL_TOKENS[1]
    tensors = load_file(str(model_dir / WEIGHTS))
    renamed = {
        hf_name(k): v.contiguous() for k, v in tensors.items() if not (cfg.tie_embeddings and k == "lm_head.weight")
    }

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(renamed, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    vocab = json.loads((model_dir / TOKENIZER).read_text())
    ids = {t["content"]: t["id"] for t in vocab.get("added_tokens", [])}
    (tmp / "config.json").write_text(json.dumps(llama_config(cfg, ids[eos], ids[pad]), indent=2))
    (tmp / "generation_config.json").write_text(
        json.dumps({"bos_token_id": ids[eos], "eos_token_id": ids[eos], "pad_token_id": ids[pad]}, indent=2)
    )
    shutil.copy2(model_dir / TOKENIZER, tmp / "tokenizer.json")
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.seq_len,
        "bos_token": eos,
        "eos_token": eos,
        "pad_token": pad,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2))
    (tmp / "special_tokens_map.json").write_text(json.dumps({"bos_token": eos, "eos_token": eos, "pad_token": pad}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir
