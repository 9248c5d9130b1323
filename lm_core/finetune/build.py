"""The heavy half of the finetune stage (torch, MLflow): gather the examples, set the model up for
the method, train, and write the model folder. `stage.py` decides whether there is work to do."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lm_core.config import Config, FinetuneConfig
from lm_core.finetune import data as chat_data
from lm_core.finetune.artifact import DATA_DIR, FinetuneError
from lm_core.finetune.data import PreferenceExample
from lm_core.finetune.lora import apply_lora, freeze, has_lora, merge_lora, param_counts
from lm_core.finetune.qa import build_qa_pairs, clean_documents, validation_urls
from lm_core.finetune.train import FinetuneData, FinetuneResult, finetune, resolved_precision, teacher_scores
from lm_core.model import GPT
from lm_core.model_folder import (
    CHAT,
    CONFIG,
    INT8_WEIGHTS,
    TOKENIZER,
    WEIGHTS,
    mark_chat_model,
    save_weights,
    write_config,
)
from lm_core.progress import Progress
from lm_core.quantize import compression_report, load_int8, save_int8
from lm_core.textgen import TextModel
from lm_core.tokenize.chat_template import ChatTemplate, Conversation, Message
from lm_core.tracking import MlflowTracker, flatten
from lm_core.train.checkpoint_model import load_checkpoint_model
from lm_core.train.plan import model_config
from lm_core.workspace import ArtifactRef, Workspace, read_manifest, write_json_atomic


@dataclass
class Examples:
    train: list  # Conversation, or PreferenceExample for dpo
    heldout: list
    heldout_chats: list[Conversation]  # what BLEU/chrF are scored on
    stats: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- examples


def _split(items: list, fraction: float, seed: int, key) -> tuple[list, list]:
    """Deterministic held-out split by a salted hash of each item's content."""
    train, heldout = [], []
    for item in items:
        h = int.from_bytes(hashlib.blake2b(f"{seed}:{key(item)}".encode(), digest_size=8).digest(), "big")
        (heldout if h < fraction * 2**64 else train).append(item)
    if not heldout and len(train) > 1:
        heldout.append(train.pop())  # a tiny set still gets something to evaluate on
    return train, heldout


def _chat_key(c: Conversation) -> str:
    return json.dumps(c.to_dict(), sort_keys=True)


def _user_chats(ft: FinetuneConfig) -> list[Conversation]:
    chats = [c for path in ft.chat_files for c in chat_data.read_chat_jsonl(path)]
    chats += [c for src in ft.chat_datasets for c in chat_data.read_chat_dataset(src.model_dump())]
    return chats


def _user_preferences(ft: FinetuneConfig) -> list[PreferenceExample]:
    prefs = [p for path in ft.preference_files for p in chat_data.read_preferences_jsonl(path)]
    prefs += [p for src in ft.preference_datasets for p in chat_data.read_preference_dataset(src.model_dump())]
    return prefs


def _qa(ft: FinetuneConfig, ws: Workspace, inputs: dict[str, str], seed: int):
    clean_fp = inputs["clean"]
    docs_dir = ws.artifact_dir("clean", clean_fp) / "docs"
    # held out: the pairs of the base's validation documents, which it never trained on
    split_cfg = read_manifest(ws.artifact_dir("chunk", inputs["chunk"]))["config"]
    val_docs = None
    if split_cfg["val_fraction"] > 0:
        val_docs = validation_urls(docs_dir, split_cfg["split_salt"], split_cfg["val_fraction"])
    split = build_qa_pairs(
        clean_documents(docs_dir),
        max_pairs=ft.qa_pairs,
        heldout_fraction=ft.heldout_fraction,
        seed=seed,
        max_answer_chars=ft.max_answer_chars,
        heldout_docs=val_docs,
    )
    if not split.train:
        raise FinetuneError(
            f"the corpus (clean {clean_fp}) yielded no question/answer pairs; give chat data in finetune.chat_files"
        )
    return split


def _preferences_from_chats(chats: list[Conversation]) -> list[PreferenceExample]:
    """Preference pairs from single-turn chats: the chat's own answer is preferred over the answer
    to another question (the next one in a fixed order): real text, clearly worse as a reply."""
    single = [c for c in chats if len(c.messages) >= 2 and c.messages[-1].role == "assistant"]
    out = []
    for i, c in enumerate(single):
        other = single[(i + 1) % len(single)].messages[-1].content
        if other != c.messages[-1].content:
            out.append(PreferenceExample(c.messages[:-1], c.messages[-1].content, other, c.origin))
    return out


def _as_chat(p: PreferenceExample) -> Conversation:
    return Conversation((*p.prompt, Message("assistant", p.chosen)), p.origin)


def examples(ft: FinetuneConfig, ws: Workspace, inputs: dict[str, str], seed: int) -> Examples:
    given = (
        bool(ft.preference_files or ft.preference_datasets)
        if ft.method == "dpo"
        else bool(ft.chat_files or ft.chat_datasets)
    )
    if ft.method == "dpo":
        if given:
            train, heldout = _split(_user_preferences(ft), ft.heldout_fraction, seed, lambda p: json.dumps(p.to_dict()))
            stats = {"source": "files"}
        else:
            qa = _qa(ft, ws, inputs, seed)
            train, heldout = _preferences_from_chats(qa.train), _preferences_from_chats(qa.heldout)
            stats = {"source": "qa", **{f"qa_{k}": v for k, v in qa.stats.items()}}
        if not train:
            raise FinetuneError("no preference pairs to train on")
        return Examples(train, heldout, [_as_chat(p) for p in heldout], stats | _counts(train, heldout))
    if given:
        train, heldout = _split(_user_chats(ft), ft.heldout_fraction, seed, _chat_key)
        stats = {"source": "files"}
    else:
        qa = _qa(ft, ws, inputs, seed)
        train, heldout = qa.train, qa.heldout
        stats = {"source": "qa", **{f"qa_{k}": v for k, v in qa.stats.items()}}
    return Examples(train, heldout, heldout, stats | _counts(train, heldout))


def _counts(train: list, heldout: list) -> dict[str, int]:
    return {"train_examples": len(train), "heldout_examples": len(heldout)}


def write_examples(folder: Path, ex: Examples) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if ex.train and isinstance(ex.train[0], PreferenceExample):
        chat_data.write_preferences_jsonl(folder / "train_preferences.jsonl", ex.train)
        chat_data.write_preferences_jsonl(folder / "heldout_preferences.jsonl", ex.heldout)
    else:
        chat_data.write_chat_jsonl(folder / "train.jsonl", ex.train)
    chat_data.write_chat_jsonl(folder / "heldout.jsonl", ex.heldout_chats)


# ----------------------------------------------------------------------------- tracking


def tracker(cfg: Config, fp: str, base: ArtifactRef, inputs: dict[str, str], run_tags: dict[str, str]) -> MlflowTracker:
    t = MlflowTracker(
        cfg.tracking_uri,
        cfg.experiment,
        f"finetune-{cfg.finetune.method}-{fp[:8]}",
        {
            "lmforge.stage": "finetune",
            "lmforge.fingerprint": fp,
            "lmforge.method": cfg.finetune.method,
            f"lmforge.base.{base.stage}": base.fingerprint,
            **{f"lmforge.{k}": v for k, v in inputs.items() if k in ("chunk", "clean")},
            **run_tags,
        },
        system_metrics=cfg.tracking.system_metrics,
    )
    ran = {"lr": cfg.finetune.peak_lr, "precision": resolved_precision(cfg.finetune, torch.device(_device()))}
    t.log_params(flatten("", {"finetune": {**cfg.finetune.model_dump(mode="json"), **ran}, "seed": cfg.seed}))
    return t


# ----------------------------------------------------------------------------- training


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _student(cfg: Config, teacher: GPT) -> GPT:
    """A smaller model for distillation: `finetune.student`, or half the teacher's depth at its
    width. Where the widths agree the student starts from the teacher: its embedding, final norm,
    head, and every other block (as DistilBERT does), so it starts close rather than from noise."""
    tc = teacher.cfg
    if cfg.finetune.student is not None:
        scfg = model_config(cfg.finetune.student, tc.vocab_size, tc.seq_len)
    else:
        scfg = type(tc)(**{**tc.to_dict(), "n_layer": max(1, tc.n_layer // 2)})
    student = GPT(scfg).to(teacher.embed.weight.device)
    same_width = (scfg.n_embd, scfg.n_head, scfg.n_kv_head, scfg.mlp_hidden) == (
        tc.n_embd,
        tc.n_head,
        tc.n_kv_head,
        tc.mlp_hidden,
    )
    if same_width:
        picks = [round(i * tc.n_layer / scfg.n_layer) for i in range(scfg.n_layer)]
        with torch.no_grad():
            student.embed.weight.copy_(teacher.embed.weight)
            student.norm.load_state_dict(teacher.norm.state_dict())
            if not scfg.tie_embeddings:
                student.lm_head.weight.copy_(teacher.lm_head.weight)
            for i, j in enumerate(picks):
                student.blocks[i].load_state_dict(teacher.blocks[j].state_dict())
    return student


def _render(template: ChatTemplate, ex: Examples, method: str, max_len: int):
    """Rendered training and held-out examples (dpo: pairs of chosen/rejected replies)."""
    if method == "dpo":

        def pairs(prefs: list[PreferenceExample]):
            out = []
            for p in prefs:
                c = template.render_reply(list(p.prompt), p.chosen, max_len)
                r = template.render_reply(list(p.prompt), p.rejected, max_len)
                if c.n_targets and r.n_targets:
                    out.append((c, r))
            return out

        train = pairs(ex.train)
        if not train:
            raise FinetuneError(f"no preference pair keeps a reply within the model's {max_len - 1}-token context")
        return train, pairs(ex.heldout), {}
    train, heldout = template.render_all(ex.train, max_len), template.render_all(ex.heldout, max_len)
    if not train.chats:
        raise FinetuneError(
            f"none of the {len(ex.train)} training chats keeps an assistant token within the model's "
            f"{max_len - 1}-token context: shorten the chats or fine-tune a model with a longer context"
        )
    stats = {
        "truncated_chats": train.truncated,
        "dropped_chats": len(train.dropped),
        "target_tokens": train.target_tokens,
    }
    return train.chats, heldout.chats, stats


def train(cfg: Config, base: ArtifactRef, ex: Examples, out: Path, tracker: MlflowTracker, progress: Progress):
    ft = cfg.finetune
    start = _load(base)
    template = ChatTemplate(start.tokenizer)
    model: GPT = start.model
    reference = None
    if ft.method == "dpo":
        reference = _load(base).model  # the frozen starting policy
    elif ft.method == "distill":
        reference, model = model, _student(cfg, model)

    if ft.freeze_embeddings or ft.freeze_blocks:
        freeze(model, embeddings=ft.freeze_embeddings, first_blocks=ft.freeze_blocks)
    if ft.lora is not None:
        apply_lora(model, list(ft.lora.targets), ft.lora.rank, ft.lora.alpha, ft.lora.dropout)
    counts = param_counts(model)
    tracker.log_params({f"params.{k}": v for k, v in counts.items()})

    max_len = model.cfg.seq_len + 1  # a chat of n tokens fills n - 1 positions
    train_set, heldout_set, render_stats = _render(template, ex, ft.method, max_len)
    scores = None
    if ft.curriculum == "length":
        scores = [float(len(x[0].ids) if isinstance(x, tuple) else len(x.ids)) for x in train_set]
    elif ft.curriculum == "teacher_loss":
        chats = [x[0] for x in train_set] if ft.method == "dpo" else train_set
        scores = teacher_scores(reference or start.model, chats, template)

    result = finetune(
        model,
        FinetuneData(train_set, heldout_set),
        ft,
        template,
        reference=reference,
        scores=scores,
        seed=cfg.seed,
        log=tracker.log_metrics,
        progress=progress,
    )
    if has_lora(model):
        merge_lora(model)
    model.requires_grad_(False)
    _write_model(out, model, start, base)
    report = _quantize(out, model, train_set) if ft.quantize else None
    return model, result, {"render": render_stats, "params": counts, "int8": report}


def _load(base: ArtifactRef) -> TextModel:
    if base.stage == "checkpoint":  # weights and model config in the checkpoint, its training's tokenizer
        return load_checkpoint_model(base.dir, _device(), tracking_uri=None)
    return TextModel.load(base.dir, device=_device())


def _write_model(out: Path, model: GPT, start: TextModel, base: ArtifactRef) -> None:
    save_weights(model.cpu(), out / WEIGHTS)
    write_config(out, model.cfg.to_dict())
    if (base.dir / TOKENIZER).is_file():
        shutil.copy2(base.dir / TOKENIZER, out / TOKENIZER)
    else:  # a checkpoint: the tokenizer its training used
        start.tokenizer.save(str(out / TOKENIZER))
    mark_chat_model(out)


def _quantize(out: Path, model: GPT, train_set: list) -> dict[str, float]:
    """The int8 copy of the fine-tuned model, beside it, and how it compares."""
    folder = out / "int8"
    folder.mkdir()
    save_int8(model, folder / INT8_WEIGHTS)
    for name in (CONFIG, TOKENIZER, CHAT):
        shutil.copy2(out / name, folder / name)
    q_model = load_int8(folder)
    chats = [x[0] if isinstance(x, tuple) else x for x in train_set[:8]]
    width = min(model.cfg.seq_len, max(len(c.ids) for c in chats))
    sample = torch.tensor([(c.ids + [0] * width)[:width] for c in chats])
    report = compression_report(model, q_model, sample)
    write_json_atomic(folder / "compression.json", report)
    return report


def finish(
    cfg: Config,
    out: Path,
    base: ArtifactRef,
    model: GPT,
    result: FinetuneResult,
    report: dict[str, Any],
    ex: Examples,
    tracker: MlflowTracker,
) -> dict[str, Any]:
    metrics = {"initial": result.initial, "final": result.final, "history": result.history, **report}
    write_json_atomic(out / "metrics.json", metrics)
    for name in ("metrics.json", CHAT):
        if (out / name).is_file():
            tracker.log_artifact(out / name)
    tracker.log_artifact(out / DATA_DIR / "heldout.jsonl", "data")
    if report.get("int8"):
        tracker.log_metrics({f"int8.{k}": v for k, v in report["int8"].items() if isinstance(v, float | int)}, 0)
    tracker.set_tags({"lmforge.artifact": str(out.parent / out.name.removeprefix(".partial-"))})
    stats = {
        "rows": len(ex.train),
        "method": cfg.finetune.method,
        "optimizer": cfg.finetune.optimizer,
        "lr": cfg.finetune.peak_lr,
        "precision": resolved_precision(cfg.finetune, torch.device(_device())),
        "base": f"{base.stage}:{base.fingerprint}",
        "params": sum(p.numel() for p in model.parameters()),
        "trainable_params": report["params"].get("trainable"),
        "steps": result.steps,
        **ex.stats,
        **report["render"],
        **{k: v for k, v in result.final.items() if isinstance(v, float) and math.isfinite(v)},
        **{f"initial_{k}": v for k, v in result.initial.items() if isinstance(v, float) and math.isfinite(v)},
    }
    if report.get("int8"):
        stats["int8"] = {k: v for k, v in report["int8"].items() if isinstance(v, float | int)}
    return stats
