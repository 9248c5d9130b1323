"""A bad configuration fails before any work, naming the field; overrides keep their types."""

from pathlib import Path

import pytest

from lm_core.config import ConfigError, FinetuneConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_are_valid():
    for name in ("tiny", "small"):
        cfg = load_config(Path(__file__).parent.parent / "configs" / f"{name}.yaml")
        assert cfg.crawl.pydoc, f"{name}.yaml should crawl the pydoc demo site"


def test_overrides_keep_types_and_reach_nested_fields(tmp_path):
    cfg = load_config(
        write(tmp_path, "crawl: {urls: ['http://example.org/']}\n"),
        ["crawl.max_pages=7", "clean.dedup.near=false", "crawl.exclude=['/private/', 'x\\d+']"],
    )
    assert cfg.crawl.max_pages == 7
    assert cfg.clean.dedup.near is False
    assert cfg.crawl.exclude == ["/private/", "x\\d+"]
    assert cfg.crawl.pydoc is False  # a real source given: no demo


@pytest.mark.parametrize(
    "text, overrides, names",
    [
        ("crawl: {max_pages: -3}", [], ["crawl.max_pages"]),
        ("", ["clean.dedup.threshold=lots"], ["clean.dedup.threshold"]),
        ("chunk: {seq_len: 256, sequence: 3}", [], ["chunk.sequence", "Extra inputs"]),
        ("crawl: {urls: ['ftp://x/']}", [], ["crawl.urls", "not an http(s) URL"]),
        ("crawl: {pydoc: false}", [], ["crawl", "no source"]),
        ("crawl: {exclude: ['(unclosed']}", [], ["crawl.exclude", "regular expression"]),
        ("tokenize: {vocab_size: 10}", [], ["tokenize.vocab_size"]),
        ("runner: {kind: spark}", [], ["runner.kind"]),
        ("runner: {address: 'tcp://127.0.0.1:8786'}", [], ["runner", "address is for kind dask or ray"]),
        ("", ["clean.quality.min_words=-5"], ["clean.quality", "min_words = -5 is negative"]),
        ("", ["clean.quality.max_duplicate_line_fraction=1.5"], ["max_duplicate_line_fraction = 1.5 is a fraction"]),
        ("", ["clean.quality.max_top_ngram_char_fraction={0: 0.2}"], ["ngram_char_fraction[0]", "at least 1 word"]),
        ("clean: {quality: {min_words: 500, max_words: 100}}", [], ["min_words = 500 is above max_words = 100"]),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, overrides, names):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), overrides)
    for n in names:
        assert n in str(e.value)


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "crawl: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["crawl.max_pages"])
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, ["seed=3", "seed.x=1"])


def test_workspace_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_WORKSPACE", str(tmp_path / "from-env"))
    assert load_config(None).workspace == tmp_path / "from-env"
    assert load_config(write(tmp_path, "workspace: from-file")).workspace == Path("from-file")
    assert load_config(None, ["workspace=from-set"]).workspace == Path("from-set")


def test_fingerprint_ignores_performance_only_fields():
    a = load_config(None, ["crawl.concurrency=2", "chunk.blocks_per_shard=10"])
    b = load_config(None, ["crawl.concurrency=16", "chunk.blocks_per_shard=99"])
    assert a.crawl.fingerprint_fields() == b.crawl.fingerprint_fields()
    assert a.chunk.fingerprint_fields() == b.chunk.fingerprint_fields()
    c = load_config(None, ["chunk.seq_len=64"])
    assert c.chunk.fingerprint_fields() != a.chunk.fingerprint_fields()


def test_the_fine_tuning_rate_defaults_to_the_chosen_optimizers_and_a_given_rate_wins():
    assert (FinetuneConfig().optimizer, FinetuneConfig().peak_lr) == ("adamw", 3e-4)
    assert FinetuneConfig(optimizer="muon").peak_lr == 0.003  # the matrices'; the AdamW groups in proportion
    assert FinetuneConfig(optimizer="muon", lr=0.01).peak_lr == 0.01
