"""The evaluate stage on a real small workspace (files -> crawl -> clean -> tokenize -> chunk ->
pretrain, a tiny model trained for a few steps): what it publishes, where its held-out pairs come
from, caching, and the bad inputs that must stop it before anything is published."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pyarrow as pa
import pytest
from helpers import pretrained_workspace
from sacrebleu.metrics import BLEU, CHRF

from lm_core.chunk.pack import split_is_val
from lm_core.chunk.stage import run_chunk
from lm_core.clean.stage import run_clean
from lm_core.config import ChunkConfig, EvaluateConfig, FilesSource, GenerationConfig, HFDatasetSource
from lm_core.crawl.stage import run_crawl
from lm_core.evaluate.errors import EvalSetError, PairFileError
from lm_core.evaluate.fingerprint import evaluate_fingerprint
from lm_core.evaluate.pairs import clean_docs_dir
from lm_core.evaluate.sets import published_pair_sets, read_text_sets
from lm_core.evaluate.stage import evaluate_model, run_evaluate
from lm_core.model_folder import ModelLoadError
from lm_core.shards import read_shard, shard_paths
from lm_core.textgen import TextModel
from lm_core.tokenize.bpe import load_tokenizer
from lm_core.workspace import ArtifactRef, Workspace

TOPICS = ["arrow", "parquet", "tokenizer", "crawler", "scheduler", "registry", "optimizer", "checkpoint",
          "evaluator", "sampler", "packer", "loader", "tracker", "exporter", "cleaner", "deduper"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    cfg, ws, chunk, model = pretrained_workspace(
        root,
        TOPICS,
        30,
        "pretrain.max_steps=8",
        "pretrain.eval_every=8",
        "pretrain.checkpoint_every=8",
        "pretrain.lr=0.01",
    )
    extra = root / "extra"
    extra.mkdir()
    (extra / "notes.txt").write_text("The registry keeps every model's metrics.\n" * 20, encoding="utf-8")
    (extra / "more.jsonl").write_text('{"text": "The crawler reads pages."}\n{"text": "It saves them."}\n')
    qa = root / "qa.jsonl"
    qa.write_text(
        json.dumps({"prompt": "The crawler reads", "reference": " 12 pages before it saves the rows."})
        + "\n\n"  # a blank line is skipped
        + json.dumps({"prompt": "The registry", "reference": " checks the weights.", "id": 7})
        + "\n"
    )
    ecfg = EvaluateConfig(
        heldout_pairs=3,
        prompt_tokens=12,
        reference_tokens=8,
        batch_size=8,
        table_rows=2,
        texts=[FilesSource(path=str(extra))],
        pair_sets=[str(qa)],
        generation=GenerationConfig(max_new_tokens=8),
    )
    ref = run_evaluate(ecfg, model, chunk, ws)
    return ws, chunk, model, ecfg, ref


def run_tokenize_clean_crawl(cfg, ws):
    from lm_core.tokenize.stage import run_tokenize

    return run_tokenize(cfg.tokenize, run_clean(cfg.clean, run_crawl(cfg.crawl, ws), ws), ws)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def nothing_published(ws: Workspace) -> bool:
    folder = ws.root / "evaluate"
    return not ws.artifacts("evaluate") and not any(p.name.startswith(".partial") for p in folder.glob("*"))


# ----------------------------------------------------------------------------- what is published


def test_the_artifact_holds_metrics_pairs_samples_and_signatures(trained):
    ws, chunk, model, ecfg, ref = trained
    assert ref.stage == "evaluate" and ref.fingerprint == evaluate_fingerprint(ecfg, model, chunk)
    metrics = json.loads((ref.dir / "metrics.json").read_text())
    for name in ("val_loss", "val_ppl", "val_bpb", "val_tokens", "text.extra.ppl", "text.extra.bpb",
                 "bleu.heldout", "chrf.heldout", "bleu.qa", "chrf.qa"):  # fmt: skip
        assert name in metrics, name
    val = chunk.stats["val"]
    assert metrics["val_tokens"] == val["blocks"] * 32  # every validation block: val_batches is null
    assert metrics["val_ppl"] == pytest.approx(2.718281828459045 ** metrics["val_loss"])
    assert 0 < metrics["val_bpb"] < 20 and metrics["pairs.heldout"] == 3 and metrics["pairs.qa"] == 2
    # pretraining's final evaluation scored the same blocks with the same weights (in its autocast
    # precision, bf16 on a CPU that has it; evaluation scores in fp32: they agree to ~2e-4)
    assert metrics["val_loss"] == pytest.approx(model.stats["val_loss"], rel=1e-3)
    assert metrics["val_bpb"] == pytest.approx(model.stats["val_bpb"], rel=1e-3)

    pairs = published_pair_sets(ref.dir)
    assert set(pairs) == {"heldout", "qa"} and len(pairs["heldout"]) == 3
    assert pairs["qa"][1].prompt == "The registry"
    samples = read_jsonl(ref.dir / "samples.jsonl")
    assert [(s["set"], s["prompt"], s["reference"]) for s in samples] == [
        (name, p.prompt, p.reference) for name in ("heldout", "qa") for p in pairs[name]
    ]
    signatures = json.loads((ref.dir / "signatures.json").read_text())
    assert set(signatures) == {"bleu.heldout", "chrf.heldout", "bleu.qa", "chrf.qa"}
    bleu = BLEU()
    bleu.corpus_score(["a"], [["a"]])  # a signature tells the number of references: known after scoring
    assert signatures["bleu.qa"] == str(bleu.get_signature())


def test_bleu_and_chrf_are_sacrebleus_scores_of_the_samples(trained):
    _, _, _, _, ref = trained
    metrics = json.loads((ref.dir / "metrics.json").read_text())
    samples = [s for s in read_jsonl(ref.dir / "samples.jsonl") if s["set"] == "heldout"]
    hyps = [" ".join(s["generation"].split()) for s in samples]
    refs = [[" ".join(s["reference"].split()) for s in samples]]
    assert metrics["bleu.heldout"] == BLEU().corpus_score(hyps, refs).score
    assert metrics["chrf.heldout"] == CHRF().corpus_score(hyps, refs).score


def test_the_results_section_is_ready_for_a_table(trained):
    _, _, _, ecfg, ref = trained
    results = ref.stats["results"]
    assert {"metric": "val_bpb", "value": f"{ref.stats['val_bpb']:.4f}"} in results["metrics"]
    assert len(results["samples"]) == ecfg.table_rows == 2
    assert set(results["samples"][0]) == {"set", "prompt", "generation", "reference"}
    assert "| val_bpb |" in results["markdown"] and "Samples (2 of 5)" in results["markdown"]
    assert ref.stats["rows"] == 5 and ref.stats["val_bpb"] > 0


def test_heldout_pairs_come_only_from_validation_documents(trained):
    _, chunk, model, _, ref = trained
    split = chunk.manifest()["config"]
    docs = pa.concat_tables(read_shard(p) for p in shard_paths(clean_docs_dir(chunk.dir)))
    held_out = split_is_val(docs.column("id").to_pylist(), split["split_salt"], split["val_fraction"])
    texts = docs.column("text").to_pylist()
    val_texts = [t for t, v in zip(texts, held_out, strict=True) if v]
    train_texts = [t for t, v in zip(texts, held_out, strict=True) if not v]
    assert val_texts and train_texts
    tm = TextModel.load(model.dir)
    for pair in published_pair_sets(ref.dir)["heldout"]:
        passage = pair.prompt + pair.reference
        assert len(tm.encode(pair.prompt)) == 12
        assert any(t.startswith(passage) for t in val_texts)
        assert not any(passage in t for t in train_texts)


def test_a_second_run_returns_the_published_artifact(trained):
    ws, chunk, model, ecfg, ref = trained
    created = ref.manifest()["created"]
    again = run_evaluate(ecfg, model, chunk, ws)
    assert again == ref and again.manifest()["created"] == created
    faster = ecfg.model_copy(update={"batch_size": 3})  # a performance knob: the same artifact
    assert evaluate_fingerprint(faster, model, chunk) == ref.fingerprint


def test_editing_a_pair_file_makes_a_new_evaluation(trained, tmp_path):
    _, chunk, model, ecfg, ref = trained
    qa = tmp_path / "qa.jsonl"
    shutil.copy(ecfg.pair_sets[0], qa)
    cfg = ecfg.model_copy(update={"pair_sets": [str(qa)]})
    before = evaluate_fingerprint(cfg, model, chunk)
    original = qa.read_text()
    qa.write_text(original.replace("weights", "metrics"))
    assert evaluate_fingerprint(cfg, model, chunk) != before
    qa.write_text(original)
    assert evaluate_fingerprint(cfg, model, chunk) == before  # the content decides, not the file's age


def test_a_champion_is_scored_on_the_challengers_very_pairs(trained):
    _, chunk, model, ecfg, ref = trained
    pairs = published_pair_sets(ref.dir)
    result = evaluate_model(TextModel.load(model.dir), ecfg, chunk.dir, pairs)
    published = json.loads((ref.dir / "metrics.json").read_text())
    for name in ("val_bpb", "bleu.heldout", "chrf.qa"):
        assert result.metrics[name] == pytest.approx(published[name], rel=1e-6)
    assert [s["prompt"] for s in result.samples] == [s["prompt"] for s in read_jsonl(ref.dir / "samples.jsonl")]
    # a model with another tokenizer cannot read the validation blocks: it is compared on texts
    texts_only = evaluate_model(TextModel.load(model.dir), ecfg, None, {}, read_text_sets(ecfg))
    assert set(texts_only.metrics) == {f"text.extra.{k}" for k in ("loss", "ppl", "bpb", "tokens")}
    assert texts_only.metrics["text.extra.bpb"] == pytest.approx(published["text.extra.bpb"], rel=1e-6)


def test_a_datasets_text_source_scores_like_the_same_file(trained, tmp_path):
    _, _, model, ecfg, _ = trained
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"The loader reads {i} shards."}) + "\n" for i in range(5)))
    cfg = ecfg.model_copy(
        update={
            "texts": [FilesSource(path=str(docs))],
            "hf_texts": [HFDatasetSource(path="json", data_files=str(docs))],
        }
    )
    sets = read_text_sets(cfg)
    assert list(sets) == ["docs", "docs-2"] and sets["docs"] == sets["docs-2"]
    metrics = evaluate_model(TextModel.load(model.dir), cfg, None, {}, sets).metrics
    assert metrics["text.docs.bpb"] == metrics["text.docs-2.bpb"] > 0


def test_a_fingerprint_needs_no_torch(trained):
    code = "import sys, lm_core.evaluate.fingerprint; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- bad inputs


def isolated(tmp_path, trained):
    """A fresh workspace that holds the trained one's artifacts (errors must publish nothing)."""
    ws, chunk, model, ecfg, _ = trained
    root = tmp_path / "ws"
    for stage in ("clean", "tokenize", "chunk", "pretrain"):
        shutil.copytree(ws.root / stage, root / stage, ignore=shutil.ignore_patterns(".lock-*"))
    new = Workspace(root)
    return new, new.ref("chunk", chunk.fingerprint), new.ref("pretrain", model.fingerprint), ecfg


@pytest.mark.parametrize(
    "content,message",
    [
        ("", r"holds no pairs"),
        ("\n  \n", r"holds no pairs"),
        ('{"prompt": "a", "reference": "b"}\n{"prompt": "a", "reference": \n', r"bad\.jsonl:2: not valid JSON"),
        ('{"prompt": "a"}\n', r"bad\.jsonl:1: missing field 'reference'"),
        ('{"prompt": 3, "reference": "b"}\n', r"bad\.jsonl:1: field 'prompt' must be a string, is int"),
        ('["a", "b"]\n', r"bad\.jsonl:1: expected a JSON object"),
    ],
)
def test_a_bad_pair_file_is_a_clear_error_and_publishes_nothing(trained, tmp_path, content, message):
    ws, chunk, model, ecfg = isolated(tmp_path, trained)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    cfg = ecfg.model_copy(update={"pair_sets": [str(bad)], "heldout_pairs": 0, "texts": []})
    with pytest.raises(PairFileError, match=message):
        run_evaluate(cfg, model, chunk, ws)
    assert nothing_published(ws)


def test_a_missing_pair_file_or_text_folder_is_named(trained, tmp_path):
    ws, chunk, model, ecfg = isolated(tmp_path, trained)
    with pytest.raises(PairFileError, match=r"nowhere\.jsonl .* does not exist"):
        run_evaluate(ecfg.model_copy(update={"pair_sets": [str(tmp_path / "nowhere.jsonl")]}), model, chunk, ws)
    with pytest.raises(EvalSetError, match=r"evaluate.texts\[0\]: .*does not exist"):
        run_evaluate(ecfg.model_copy(update={"texts": [FilesSource(path=str(tmp_path / "none"))]}), model, chunk, ws)
    assert nothing_published(ws)


def test_an_empty_text_set_or_an_html_file_is_a_clear_error(trained, tmp_path):
    ws, chunk, model, ecfg = isolated(tmp_path, trained)
    (tmp_path / "empty").mkdir()
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "index.html").write_text("<p>hi</p>")
    for folder, message in (("empty", r"text set 'empty'.* holds no document"), ("page", r"index\.html.*content_type")):
        cfg = ecfg.model_copy(update={"texts": [FilesSource(path=str(tmp_path / folder))], "heldout_pairs": 0})
        with pytest.raises(EvalSetError, match=message):
            run_evaluate(cfg, model, chunk, ws)
    assert nothing_published(ws)


def test_heldout_pairs_longer_than_every_document_are_a_clear_error(trained, tmp_path):
    ws, chunk, model, ecfg = isolated(tmp_path, trained)
    cfg = ecfg.model_copy(update={"prompt_tokens": 100_000})
    with pytest.raises(EvalSetError, match=r"no validation document .* holds prompt_tokens \+ reference_tokens"):
        run_evaluate(cfg, model, chunk, ws)
    assert nothing_published(ws)


def test_a_chunk_without_validation_blocks_is_a_clear_error(trained, tmp_path):
    ws, chunk, model, ecfg = isolated(tmp_path, trained)
    tokens = ws.ref("tokenize", chunk.manifest()["inputs"]["tokenize"])
    no_val = run_chunk(ChunkConfig(seq_len=32, val_fraction=0.0), tokens, ws)
    with pytest.raises(EvalSetError, match=r"has no validation block .* chunk.val_fraction"):
        run_evaluate(ecfg.model_copy(update={"heldout_pairs": 0}), model, no_val, ws)
    assert nothing_published(ws)


def test_a_tokenizer_that_does_not_match_the_model_is_refused(trained, tmp_path):
    ws, chunk, model, ecfg = isolated(tmp_path, trained)
    tok = json.loads((model.dir / "tokenizer.json").read_text())

    bigger = tmp_path / "bigger"  # more tokens than the model has embeddings
    shutil.copytree(model.dir, bigger)
    grown = load_tokenizer(model.dir / "tokenizer.json")
    grown.add_tokens([f"extra-token-{i}" for i in range(8)])
    grown.save(str(bigger / "tokenizer.json"))
    ref = ArtifactRef(stage="pretrain", fingerprint="bigger", path=str(bigger))
    with pytest.raises(ModelLoadError, match=r"do not belong together"):
        run_evaluate(ecfg, ref, chunk, ws)

    swapped = tmp_path / "swapped"  # the same size, but ids that mean other tokens
    shutil.copytree(model.dir, swapped)
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (swapped / "tokenizer.json").write_text(json.dumps(tok))
    ref = ArtifactRef(stage="pretrain", fingerprint="swapped", path=str(swapped))
    with pytest.raises(EvalSetError, match=r"another tokenizer than the one that encoded the blocks"):
        run_evaluate(ecfg, ref, chunk, ws)
    assert nothing_published(ws)
