"""The evaluate stage: a model artifact and the chunk artifact it learned from -> its scores.

    evaluate/<fp>/
        metrics.json      flat names: val_loss, val_ppl, val_bpb, val_tokens,
                          text.<set>.{loss,ppl,bpb,tokens}, bleu.<set>, chrf.<set>, pairs.<set>
        signatures.json   sacrebleu's signature of every BLEU and chrF figure
        pairs/<set>.jsonl the prompt/reference pairs scored (`heldout`: built from held-out documents)
        samples.jsonl     set, prompt, generation, reference: one line per pair

The artifact's stats hold the metrics too, and `results`: table rows (metrics, the first
`table_rows` samples) and the same as markdown, for the orchestration layer to show.

`evaluate_model` scores an already loaded model on given sets: the registry uses it to score the
current champion on the very pairs a challenger was scored on (`published_pair_sets`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lm_core.config import Config, EvaluateConfig
from lm_core.evaluate.bleu import score_pairs
from lm_core.evaluate.errors import EvalSetError
from lm_core.evaluate.fingerprint import STAGE, evaluation_key
from lm_core.evaluate.pairs import Pair, write_pairs
from lm_core.evaluate.perplexity import score_texts, score_validation
from lm_core.evaluate.preferences import model_preference_sets, preference_accuracy, write_preference_sets
from lm_core.evaluate.sets import CHAT, PAIRS_DIR, build_pair_sets, read_text_sets
from lm_core.progress import NullProgress, Progress
from lm_core.stages import Inputs, StageRun, UiArtifact
from lm_core.textgen import TextModel
from lm_core.tokenize.bpe import load_tokenizer
from lm_core.tokenize.chat_template import END, END_OF_TEXT
from lm_core.tokenize.stage import TOKENIZER_FILE
from lm_core.ui_text import md_escape, model_label
from lm_core.workspace import ArtifactRef, StageKey, Workspace, write_json_atomic


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat names, as in metrics.json
    signatures: dict[str, str] = field(default_factory=dict)  # "bleu.<set>" -> sacrebleu signature
    samples: list[dict[str, str]] = field(default_factory=list)  # set, prompt, generation, reference
    timings: dict[str, float] = field(default_factory=dict)  # seconds and tokens/s of each part


# ----------------------------------------------------------------------------- scoring a loaded model


def check_tokenizer(model: TextModel, chunk_dir: str | Path) -> None:
    """The validation blocks are token ids: they mean something only to a model with the
    tokenizer that encoded them."""
    chunk_tok = load_tokenizer(Path(chunk_dir) / TOKENIZER_FILE)
    if chunk_tok.get_vocab(with_added_tokens=True) != model.tokenizer.get_vocab(with_added_tokens=True):
        raise EvalSetError(
            f"the model {model.source} has another tokenizer than the one that encoded the blocks of {chunk_dir}: "
            "evaluate a model on the chunk artifact it was trained on"
        )


def evaluate_model(
    model: TextModel,
    cfg: EvaluateConfig,
    chunk_dir: str | Path | None,
    pair_sets: dict[str, list[Pair]],
    text_sets: dict[str, list[str]] | None = None,
    progress: Progress = NullProgress(),
    preference_sets: dict[str, list] | None = None,
    reference: TextModel | None = None,
) -> EvalResult:
    """Validation loss/perplexity/bits-per-byte on the chunk's validation blocks (skipped when
    `chunk_dir` is None: a model with another tokenizer cannot read them), the same on each text
    set, and BLEU/chrF of the model's generations on each pair set."""
    result = EvalResult(metrics={})
    if chunk_dir is not None:
        check_tokenizer(model, chunk_dir)
        t0 = time.perf_counter()
        val = score_validation(model, chunk_dir, cfg.batch_size, cfg.val_batches, progress)
        _timed(result, "val", t0, val.tokens)
        result.metrics |= {f"val_{k}": v for k, v in val.metrics().items()}

    for name, docs in (text_sets or {}).items():
        t0 = time.perf_counter()
        score = score_texts(model, docs, cfg.batch_size, cfg.stride, progress, name)
        _timed(result, f"text.{name}", t0, score.tokens)
        result.metrics |= {f"text.{name}.{k}": v for k, v in score.metrics().items()}

    for name, pairs in pair_sets.items():
        # held-out chats are questions to answer; every other pair set is text to continue
        scores = score_pairs(model, pairs, cfg.generation, cfg.batch_size, progress, name, as_chat=name == CHAT)
        result.timings[f"generate.{name}.seconds"] = scores.seconds
        result.timings[f"generate.{name}.tokens_per_s"] = scores.generated_tokens / max(scores.seconds, 1e-9)
        result.metrics |= {f"bleu.{name}": scores.bleu, f"chrf.{name}": scores.chrf, f"pairs.{name}": len(pairs)}
        result.signatures |= {f"{metric}.{name}": sig for metric, sig in scores.signatures.items()}
        result.samples += [{"set": name, **s} for s in scores.samples]

    for name, prefs in (preference_sets or {}).items():
        scores = preference_accuracy(model, prefs, cfg.batch_size, progress, name, reference)
        result.metrics |= {f"preference_{k}.{name}": v for k, v in scores.items()}
    return result


def _timed(result: EvalResult, part: str, t0: float, tokens: int) -> None:
    seconds = time.perf_counter() - t0
    result.timings[f"{part}.seconds"] = seconds
    result.timings[f"{part}.tokens_per_s"] = tokens / max(seconds, 1e-9)


# ----------------------------------------------------------------------------- the stage


def resolve_device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("evaluate.device is cuda but no CUDA device is available")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"


def evaluate_stage(cfg: Config, inputs: Inputs, ws: Workspace, key: StageKey, run: StageRun) -> ArtifactRef:
    return run_evaluate(cfg.evaluate, inputs["model"], inputs["chunk"], ws, run.progress, key=key)


SAMPLE_COLUMNS = ("set", "prompt", "generation", "reference")


def evaluate_ui(cfg: Config, ref: ArtifactRef) -> list[UiArtifact]:
    """The metrics, samples of every set (a chat model's chats first), and both as one markdown
    document; keyed by the model scored, `base` or `chat`: a lifecycle evaluates both."""
    inputs = ref.manifest()["inputs"]
    label = model_label(inputs)
    model = ", ".join(f"{k} `{v}`" for k, v in inputs.items() if k in ("pretrain", "finetune"))
    about = f"evaluate `{ref.fingerprint}` of the {label} model ({model})"
    metrics = [{"metric": r["metric"], "value": r["value"]} for r in ref.stats.get("results", {}).get("metrics", [])]
    samples = shown_samples(ref, cfg.evaluate.table_rows, first=CHAT if label == "chat" else None)
    shown = [UiArtifact("table", f"evaluate-metrics-{label}", metrics or [{"metric": "(none)", "value": ""}], about)]
    if samples:
        what = f"{len(samples)} samples of the {label} model: prompt, its generation (to its end token), reference"
        clipped = [{k: _clipped(v) for k, v in s.items()} for s in samples]  # whole in evaluate-results
        shown.append(UiArtifact("table", f"evaluate-samples-{label}", clipped, what))
    text = _results_markdown(about, metrics, samples)
    return [*shown, UiArtifact("markdown", f"evaluate-results-{label}", text, about)]


def shown_samples(ref: ArtifactRef, rows: int, first: str | None = None) -> list[dict[str, str]]:
    """Up to `rows` samples, as many of each set (set `first` first), generations cut at the end
    token: what follows it is what the model says after it is done."""
    path = ref.dir / "samples.jsonl"
    if rows <= 0 or not path.is_file():
        return []
    by_set: dict[str, list[dict[str, str]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            sample = json.loads(line)
            by_set.setdefault(sample["set"], []).append(sample)
    order = sorted(by_set, key=lambda name: name != first)  # stable: the others keep their order
    each = max(1, rows // len(order)) if order else 0
    picked = [s for name in order for s in by_set[name][:each]][:rows]
    return [{k: _until_end(s[k]) if k == "generation" else s[k] for k in SAMPLE_COLUMNS} for s in picked]


def _clipped(text: str, chars: int = 100) -> str:
    """A table cell short enough that the table's four columns fit a screen."""
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def _until_end(text: str) -> str:
    for end in (END, END_OF_TEXT):
        text = text.split(end, 1)[0]
    return text.strip()


def _results_markdown(about: str, metrics: list[dict[str, str]], samples: list[dict[str, str]]) -> str:
    """The metrics and the samples as one markdown document, every cell escaped."""
    lines = [f"**{about}**", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {md_escape(r['metric'])} | {md_escape(r['value'])} |" for r in metrics]
    if samples:
        lines += ["", "| " + " | ".join(SAMPLE_COLUMNS) + " |", "| --- " * len(SAMPLE_COLUMNS) + "|"]
        lines += ["| " + " | ".join(md_escape(s[k]) for k in SAMPLE_COLUMNS) + " |" for s in samples]
    return "\n".join(lines) + "\n"


def run_evaluate(
    cfg: EvaluateConfig,
    model: ArtifactRef,
    chunk: ArtifactRef,
    ws: Workspace,
    progress: Progress = NullProgress(),
    key: StageKey | None = None,
) -> ArtifactRef:
    """Score the model artifact `model` (a folder `TextModel.load` reads) into a published
    `evaluate` artifact, or return the published one. Bad inputs (pair files, text sets, a model
    whose tokenizer does not fit) raise before anything is published. `key`: computed already
    (`evaluate_key`)."""
    key = key or evaluation_key(cfg, model, chunk)
    fp, inputs = key.fingerprint, key.inputs
    with ws.build(STAGE, fp, config=key.config, inputs=inputs) as b:
        if b.published:
            return b.ref
        t0 = time.perf_counter()
        text_model = TextModel.load(model.dir, device=resolve_device(cfg.device))
        check_tokenizer(text_model, chunk.dir)  # before any work: nothing else is worth doing then
        pair_sets = build_pair_sets(cfg, text_model, chunk.dir, model.dir)
        text_sets = read_text_sets(cfg)
        pref_sets = model_preference_sets(model.dir)
        base = _base_model(model, ws) if pref_sets else None
        result = evaluate_model(text_model, cfg, chunk.dir, pair_sets, text_sets, progress, pref_sets, base)
        _write(b.dir, pair_sets, result)
        write_preference_sets(b.dir, pref_sets)
        b.stats = {
            **result.metrics,
            "rows": len(result.samples),
            "seconds": round(time.perf_counter() - t0, 3),
            "timings": result.timings,
            "results": results_tables(result, cfg.table_rows),
        }
    assert b.ref is not None
    return b.ref


def _base_model(model: ArtifactRef, ws: Workspace) -> TextModel | None:
    """The model a fine-tuned model started from, if it is still in the workspace: the reference
    of its preference reward."""
    inputs = model.manifest()["inputs"]
    for stage in ("pretrain", "finetune"):
        if stage in inputs and ws.is_published(stage, inputs[stage]):  # (a model never names itself)
            return TextModel.load(ws.artifact_dir(stage, inputs[stage]), device=resolve_device("auto"))
    return None


def _write(out: Path, pair_sets: dict[str, list[Pair]], result: EvalResult) -> None:
    write_json_atomic(out / "metrics.json", result.metrics)
    write_json_atomic(out / "signatures.json", result.signatures)
    (out / PAIRS_DIR).mkdir()
    for name, pairs in pair_sets.items():
        write_pairs(out / PAIRS_DIR / f"{name}.jsonl", pairs)
    with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
        for s in result.samples:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------- results for people


def results_tables(result: EvalResult, table_rows: int) -> dict[str, Any]:
    """Rows for a metrics table and a samples table (what a Prefect table artifact takes), and
    both as one markdown document."""
    metrics = [{"metric": k, "value": _shown(v)} for k, v in result.metrics.items()]
    samples = result.samples[:table_rows]
    md = ["| metric | value |", "| --- | --- |"]
    md += [f"| {r['metric']} | {r['value']} |" for r in metrics]
    if samples:
        md += ["", f"Samples ({len(samples)} of {len(result.samples)}):", ""]
        md += ["| set | prompt | generation | reference |", "| --- | --- | --- | --- |"]
        md += [
            "| " + " | ".join(_cell(s[k]) for k in ("set", "prompt", "generation", "reference")) + " |" for s in samples
        ]
    return {"metrics": metrics, "samples": samples, "markdown": "\n".join(md) + "\n"}


def _shown(value: float) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")
