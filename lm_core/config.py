"""The one typed configuration of an lmforge run.

A run is described by one YAML file validated by these pydantic models and overridable from
the command line (`--set crawl.max_pages=200`). Every model forbids unknown keys, so a typo is
an error that names the field before any work starts.

Each stage's section is hashed into that stage's fingerprint, except the fields listed in its
`PERFORMANCE_ONLY` set: knobs that change how fast a stage runs, never what it produces.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from lm_core.secrets import mask_url, mask_urls, tracking_credentials_to_env
from lm_core.stages import DEFAULT_CRONS, SCHEDULED_FLOWS


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and the problem."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    PERFORMANCE_ONLY: ClassVar[frozenset[str]] = frozenset()

    def fingerprint_fields(self) -> dict[str, Any]:
        """The values that decide this stage's output (what its fingerprint hashes)."""
        return self.model_dump(mode="json", exclude=set(self.PERFORMANCE_ONLY))


# ----------------------------------------------------------------------------- crawl


class FilesSource(BaseModel):
    """Local documents: html, htm, txt, md, and jsonl files whose records carry a text field."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="a file, or a folder read recursively")
    glob: str = Field("**/*", description="in a folder: the files to read")
    text_field: str = Field("text", description="jsonl: the field that holds the text")


class HFDatasetSource(BaseModel):
    """Anything `datasets.load_dataset` reads (a hub name, or a builder such as `json` with local
    `data_files`), taking one text column."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="a hub dataset name, or a builder such as json, csv, parquet")
    name: str | None = Field(None, description="the dataset's configuration name")
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    split: str = "train"
    text_field: str = Field("text", description="the column that holds the text")
    streaming: bool = Field(True, description="read records as they download, not after")
    max_docs: int | None = Field(default=None, gt=0, description="read at most this many records")


class CrawlConfig(Section):
    """Where documents come from, and the manners of the web crawler."""

    PERFORMANCE_ONLY = frozenset({"concurrency", "per_host_concurrency", "docs_per_shard"})

    # sources (combinable)
    urls: list[str] = Field(
        default_factory=list,
        description="seed URLs, crawled breadth-first; no password in them: sites' credentials go in ~/.netrc",
    )
    pydoc: bool | None = Field(
        default=None,
        description="start `python -m pydoc` on 127.0.0.1 and crawl its documentation site (the demo); "
        "default: on when no other source is given",
    )
    warc: list[str] = Field(default_factory=list, description="WARC files (plain or .gz)")
    files: list[FilesSource] = Field(default_factory=list)
    hf_dataset: list[HFDatasetSource] = Field(default_factory=list)

    # scope
    max_pages: int = Field(
        default=1000, gt=0, description="pages requested at most, whatever their outcome (refused links do not count)"
    )
    max_depth: int = Field(default=5, ge=0, description="links followed from a seed at most")
    allow_hosts: list[str] = Field(
        default_factory=list, description="hosts to follow links into; default: the seeds' hosts"
    )
    allow_prefixes: list[str] = Field(
        default_factory=list, description="URL prefixes to stay under; default: anywhere on allowed hosts"
    )
    exclude: list[str] = Field(default_factory=list, description="regular expressions; matching URLs are refused")
    # Each kind of non-public address has a setting of its own; a host resolving to one is refused
    # otherwise, and the failure names the setting. allow_private once covered all three; it now
    # covers private networks only, on purpose: an intranet crawl must not reach this machine's own
    # services (lmforge's Prefect and MLflow servers) or a cloud's credentials through a link or a
    # redirect. A config that crawled 127.0.0.1 with it still loads; its pages are refused with a
    # message naming allow_loopback (the whole crawl fails with it when nothing else is fetched).
    allow_private: bool = Field(
        default=False,
        description="fetch hosts on private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, other "
        "reserved ranges): an intranet. Not loopback nor link-local, which have settings of their own",
    )
    allow_loopback: bool = Field(
        default=False, description="fetch hosts on this machine (127.0.0.0/8, ::1, 0.0.0.0): a local test server"
    )
    allow_link_local: bool = Field(
        default=False,
        description="fetch link-local hosts (169.254.0.0/16, fe80::/10), where clouds serve instance metadata and "
        "credentials: refused, and redirects into them too, whatever allow_private says",
    )

    # manners
    obey_robots: bool = Field(
        True, description="follow robots.txt; its Crawl-delay lengthens delay_s, never shortens it"
    )
    user_agent: str = "lmforge/0.1 (+https://github.com/lmforge/lmforge)"
    concurrency: int = Field(default=8, gt=0, description="requests in flight at once")
    per_host_concurrency: int = Field(default=2, gt=0, description="requests in flight to one host")
    delay_s: float = Field(default=0.0, ge=0, description="pause between requests to one host")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="seconds to connect")
    read_timeout_s: float = Field(default=20.0, gt=0, description="seconds to wait for data")
    max_bytes: int = Field(default=5_000_000, gt=0, description="responses larger than this are refused")
    content_types: list[str] = Field(
        default_factory=lambda: ["text/html", "application/xhtml+xml", "text/plain", "text/markdown"],
        description="media types kept; others are refused",
    )
    max_redirects: int = Field(default=5, ge=0, description="redirect hops followed per fetch")
    retries: int = Field(default=2, ge=0, description="retries after a 5xx, a timeout or a dropped connection")
    backoff_s: float = Field(default=0.5, ge=0, description="first retry pause; doubles each retry")

    docs_per_shard: int = Field(default=500, gt=0, description="documents per output shard")

    @model_validator(mode="after")
    def _has_a_source(self) -> CrawlConfig:
        others = bool(self.urls or self.warc or self.files or self.hf_dataset)
        if self.pydoc is None:
            object.__setattr__(self, "pydoc", not others)  # the demo, when nothing else is given
        if not (others or self.pydoc):
            raise ValueError("no source: give at least one of urls, pydoc, warc, files, hf_dataset")
        return self

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, urls: list[str]) -> list[str]:
        for u in urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"{mask_url(u)!r} is not an http(s) URL")
            if mask_url(u) != u:
                raise ValueError(
                    f"{mask_url(u)}: a password in a seed URL would be stored with the config, the manifests "
                    "and the documents; put it in ~/.netrc (machine HOST login USER password PASSWORD), "
                    "which the crawler reads"
                )
        return urls

    @field_validator("exclude")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"{p!r} is not a valid regular expression: {e}") from None
        return patterns


# ----------------------------------------------------------------------------- clean


# Two sets of thresholds for the quality rules. `web`: Gopher's published values (Rae et al.
# 2021), for web prose. `docs`: for documentation and code sites, where pages are short (a stub,
# a tutorial's last step), list-shaped (changelogs, an author list), dense in identifiers and
# numbers (an API table, a module of constants) and repetitive by design (every subclass lists
# its inherited methods with their docstrings; signatures such as `__init__(self, /)` recur):
# Gopher's values drop 60% of 247 pydoc pages and 22% of Sphinx's documentation pages.
# Both are measured on prose only (see lm_core/clean/quality.py); bench/extract_fidelity.py
# reports what each drops from real built sites.
QUALITY_PROFILES: dict[str, dict[str, Any]] = {
    "web": {
        "min_words": 50,
        "max_words": 100_000,
        "min_mean_word_length": 3.0,
        "max_mean_word_length": 10.0,
        "max_symbol_word_ratio": 0.1,
        "min_alpha_word_fraction": 0.8,
        "max_ellipsis_line_fraction": 0.3,
        "max_bullet_line_fraction": 0.9,
        "max_duplicate_line_fraction": 0.3,
        "max_duplicate_line_char_fraction": 0.2,
        "max_duplicate_paragraph_fraction": 0.3,
        "max_duplicate_paragraph_char_fraction": 0.2,
        "max_top_ngram_char_fraction": {2: 0.20, 3: 0.18, 4: 0.16},
        "max_duplicate_ngram_char_fraction": {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
    },
    "docs": {
        "min_words": 20,
        "max_words": 1_000_000,
        "min_mean_word_length": 3.0,
        "max_mean_word_length": 20.0,
        "max_symbol_word_ratio": 0.25,
        "min_alpha_word_fraction": 0.4,
        "max_ellipsis_line_fraction": 0.3,
        "max_bullet_line_fraction": None,
        "max_duplicate_line_fraction": 0.9,
        "max_duplicate_line_char_fraction": 0.9,
        "max_duplicate_paragraph_fraction": 0.8,
        "max_duplicate_paragraph_char_fraction": 0.8,
        "max_top_ngram_char_fraction": {2: 0.30, 3: 0.25, 4: 0.20},
        "max_duplicate_ngram_char_fraction": {5: 0.80, 6: 0.79, 7: 0.78, 8: 0.77, 9: 0.76, 10: 0.75},
    },
}
_DOCS = QUALITY_PROFILES["docs"]


class QualityConfig(BaseModel):
    """Gopher/C4-style document quality rules. `profile` gives every threshold its value
    (`docs`, the default, or `web`); a threshold set here wins, and null switches its rule off."""

    model_config = ConfigDict(extra="forbid")
    profile: Literal["docs", "web"] = Field("docs", description="docs: documentation and code sites; web: Gopher's")
    min_words: int | None = Field(_DOCS["min_words"], description="prose and code words")
    max_words: int | None = _DOCS["max_words"]
    min_mean_word_length: float | None = _DOCS["min_mean_word_length"]
    max_mean_word_length: float | None = _DOCS["max_mean_word_length"]
    max_symbol_word_ratio: float | None = Field(_DOCS["max_symbol_word_ratio"], description="'#' and '...' per word")
    min_alpha_word_fraction: float | None = Field(
        _DOCS["min_alpha_word_fraction"], description="words with at least one letter"
    )
    max_ellipsis_line_fraction: float | None = _DOCS["max_ellipsis_line_fraction"]
    max_bullet_line_fraction: float | None = _DOCS["max_bullet_line_fraction"]
    max_duplicate_line_fraction: float | None = Field(
        _DOCS["max_duplicate_line_fraction"], description="most lines that may repeat an earlier line"
    )
    max_duplicate_line_char_fraction: float | None = Field(
        _DOCS["max_duplicate_line_char_fraction"], description="most characters that may lie in repeated lines"
    )
    max_duplicate_paragraph_fraction: float | None = _DOCS["max_duplicate_paragraph_fraction"]
    max_duplicate_paragraph_char_fraction: float | None = _DOCS["max_duplicate_paragraph_char_fraction"]
    max_top_ngram_char_fraction: dict[int, float] | None = Field(
        default_factory=lambda: dict(_DOCS["max_top_ngram_char_fraction"]),
        description="n -> most characters the commonest word n-gram may cover",
    )
    max_duplicate_ngram_char_fraction: dict[int, float] | None = Field(
        default_factory=lambda: dict(_DOCS["max_duplicate_ngram_char_fraction"]),
        description="n -> most characters that repeated word n-grams may cover",
    )

    @model_validator(mode="before")
    @classmethod
    def _profile_values(cls, data: Any) -> Any:
        """Thresholds not given take the profile's values."""
        if not isinstance(data, dict):
            return data
        profile = QUALITY_PROFILES.get(data.get("profile", "docs"))
        if profile is None:
            return data  # the field's own validation names the bad profile
        return {**copy.deepcopy(profile), **data}

    @model_validator(mode="after")
    def _thresholds_make_sense(self) -> QualityConfig:
        """A negative threshold, a fraction above 1, an n-gram of no words or a minimum above its
        maximum would drop every document, or none, without a word: refused, by name."""
        problems = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "profile" or value is None:
                continue
            for n, v in value.items() if isinstance(value, dict) else [(None, value)]:
                label = name if n is None else f"{name}[{n}]"
                if n is not None and n < 1:
                    problems.append(f"{label}: an n-gram has at least 1 word")
                if v < 0:
                    problems.append(f"{label} = {v} is negative")
                elif "fraction" in name and v > 1:
                    problems.append(f"{label} = {v} is a fraction, at most 1")
        for low, high in (("min_words", "max_words"), ("min_mean_word_length", "max_mean_word_length")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                problems.append(f"{low} = {lo} is above {high} = {hi}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PIIConfig(BaseModel):
    """Credentials and personal data replaced in the clean text; each kind's candidates are checked
    before they are replaced."""

    model_config = ConfigDict(extra="forbid")
    secrets: bool = Field(
        True,
        description="API keys and tokens (by their prefixes), private keys, passwords in URLs, values of variables "
        "whose name ends in password/secret/token/api_key/...; in code blocks too",
    )
    emails: bool = Field(True, description="e-mail addresses, in code blocks too (not logo@2x.png, git@host:repo)")
    ip_addresses: bool = Field(
        True,
        description="IPv4 addresses judged by context (a network word, URL, port; not after a version word or "
        "product name; in code blocks only with such evidence) and IPv6 addresses",
    )
    phone_numbers: bool = Field(
        True,
        description="numbers valid for phonenumbers: with their country code (+44 ...), or valid in one of "
        "phone_regions and grouped as there; in code blocks only with a country code or on a line naming a phone",
    )
    phone_regions: list[str] = Field(
        ["US", "GB", "IN", "AU", "DE", "FR", "IE", "NZ", "ZA"],
        description="regions (ISO 3166 codes) whose national numbers, written without a country code, are "
        "scrubbed (default: where an English-language corpus's national numbers come from; US covers all of +1, "
        "Canada too). Each one added catches more and mistakes more digit groups; [] scrubs only numbers "
        "written with their country code",
    )
    secret_replacement: str = Field("<secret>", description="what replaces a secret")
    email_replacement: str = Field("<email>", description="what replaces an e-mail address")
    ip_replacement: str = Field("<ip>", description="what replaces an IP address")
    phone_replacement: str = Field("<phone>", description="what replaces a phone number")
    only_public_ips: bool = Field(
        True, description="leave private/loopback/reserved/documentation addresses as they are"
    )

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, regions: list[str]) -> list[str]:
        import phonenumbers  # here, not at the top: the config is imported by light modules

        unknown = [r for r in regions if r.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"unknown phone regions {unknown}: use ISO 3166 codes such as US, GB, DE")
        return [r.upper() for r in regions]


class DedupConfig(BaseModel):
    """Duplicates are dropped: exact copies and near-duplicates of a document kept before them."""

    model_config = ConfigDict(extra="forbid")
    exact: bool = Field(True, description="same text once lowercased, without punctuation, whitespace collapsed")
    near: bool = Field(True, description="MinHash-LSH near-duplicates")
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity counted as a near-duplicate")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    shingle_words: int = Field(5, ge=1, description="words per shingle")


class LanguageConfig(BaseModel):
    """An optional language filter."""

    model_config = ConfigDict(extra="forbid")
    keep: list[str] | None = Field(None, description="ISO 639-1 codes to keep, e.g. [en]; null: no language filter")
    min_score: float = Field(0.65, ge=0, le=1, description="a language guess less sure than this drops the page")


class CleanConfig(Section):
    """Raw documents -> main text: extraction, quality rules, language filter, scrubbing,
    deduplication. Every dropped document is kept in `rejected` with its reason."""

    PERFORMANCE_ONLY = frozenset({"docs_per_shard", "bytes_per_job"})
    extract_tables: bool = Field(True, description="keep data tables (as | a | b | rows)")
    favor: Literal["precision", "recall", "balanced"] = Field(
        "balanced", description="trafilatura's trade-off where a page declares no main content"
    )
    quality: QualityConfig = Field(default_factory=QualityConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    docs_per_shard: int = Field(
        500, gt=0, description="input documents (in URL order) per output shard; a cleaning task never spans two"
    )
    bytes_per_job: int = Field(
        1_000_000,
        gt=0,
        description="raw bytes to clean per task at most: a larger page gets a task of its own, and the biggest "
        "tasks start first (documents reused from an earlier build weigh nothing)",
    )


# ----------------------------------------------------------------------------- tokenize, chunk


class TokenizeConfig(Section):
    """A byte-level BPE tokenizer, trained on the clean documents or reused, and the documents
    encoded with it."""

    PERFORMANCE_ONLY = frozenset({"batch_size"})
    vocab_size: int = Field(8192, ge=512, le=1_000_000, description="tokens in the trained vocabulary")
    path: str | None = Field(None, description="reuse this tokenizer.json instead of training one")
    min_frequency: int = Field(2, ge=1, description="a pair seen fewer times is not merged")
    max_train_chars: int = Field(500_000_000, gt=0, description="train the tokenizer on at most this much text")
    batch_size: int = Field(1000, gt=0, description="documents per encode_batch call")
    retrain: bool = Field(
        False,
        description="train a new tokenizer even when one was trained with these settings on an earlier crawl "
        "snapshot of the same sources (by default that one is kept, so token ids do not move)",
    )


class DecontaminateConfig(BaseModel):
    """Passages of training documents shared with an evaluation set (the validation documents, and
    `evaluate.texts`, `hf_texts`, `pair_sets`) are cut out before packing."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    ngram: int = Field(13, ge=4, description="a window of this many tokens shared with an evaluation set is cut")
    max_train_docs: int | None = Field(
        None,
        ge=1,
        description="null: cut every shared window. A number: a window found in more training documents than "
        "this is common text (boilerplate, idioms) and is kept, as GPT-3 did (the small demo: 17.5% of training "
        "tokens cut with null, 4.2% with 10)",
    )


class ChunkConfig(Section):
    """Token documents -> train/validation blocks of `seq_len + 1` tokens, with training text
    shared with an evaluation set cut out."""

    PERFORMANCE_ONLY = frozenset({"blocks_per_shard"})
    seq_len: int = Field(256, ge=8, description="model context; blocks hold seq_len + 1 tokens")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="share of documents (by hash) held out")
    split_salt: str = Field("lmforge", description="salt of the document hash that picks the validation documents")
    blocks_per_shard: int = Field(8192, gt=0, description="blocks per output shard")
    group_blocks: int = Field(
        16,
        ge=1,
        description="documents are packed in groups of about this many blocks each, so that a changed "
        "document moves only the blocks of its group (and some of the blocks made of groups' leftovers)",
    )
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)


# ----------------------------------------------------------------------------- model, pretrain

# name -> (depth, explicit overrides). Everything not given derives from depth (GPTConfig.from_depth).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"depth": 2, "n_embd": 64, "n_head": 2, "n_kv_head": 2},  # CI: seconds
    "small": {"depth": 4, "n_embd": 256, "n_head": 4, "n_kv_head": 4},  # a laptop CPU: minutes
    "d12": {"depth": 12},  # one GPU: 768 wide, 6 heads of 128
    "gpt2-124m": {"depth": 12, "n_embd": 768, "n_head": 12, "n_kv_head": 12},  # GPT-2 small's shape
}


class ModelConfig(Section):
    """The GPT's shape: a preset or a depth; any derived value can still be set explicitly.
    The vocabulary comes from the tokenizer and the context from `chunk.seq_len`."""

    preset: Literal["tiny", "small", "d12", "gpt2-124m"] | None = Field(
        "small", description="tiny: CI; small: a laptop CPU; d12: one GPU; gpt2-124m: GPT-2 small's shape"
    )
    depth: int | None = Field(None, ge=1, le=128, description="layers; sets width 64*depth unless given")
    n_embd: int | None = Field(None, ge=8, description="width")
    n_head: int | None = Field(None, ge=1, description="attention heads; default: heads of 128 (of 64 below width 512)")
    n_kv_head: int | None = Field(None, ge=1, description="fewer than n_head: grouped-query attention")
    mlp_hidden: int | None = Field(None, ge=8, description="SwiGLU width; default: about 8/3 of the width")
    tie_embeddings: bool = Field(False, description="the output layer shares the token embeddings' weights")
    rope_theta: float = Field(10000.0, gt=0, description="base of the rotary embeddings")
    qk_norm: bool = Field(True, description="RMS-normalise each head's queries and keys (exports as Qwen3)")
    zero_init_out: bool = Field(True, description="the blocks' output projections start at zero")

    def shape(self) -> dict[str, Any]:
        """depth and the explicit overrides, preset first, then the fields set here."""
        values = dict(MODEL_PRESETS[self.preset]) if self.preset else {}
        for k in ("depth", "n_embd", "n_head", "n_kv_head", "mlp_hidden"):
            if getattr(self, k) is not None:
                values[k] = getattr(self, k)
        if "depth" not in values:
            raise ValueError("model: give a preset or a depth")
        return values


class DistributedConfig(BaseModel):
    """Passed to torchrun when nproc > 1 or nnodes > 1."""

    model_config = ConfigDict(extra="forbid")
    nproc: int = Field(1, ge=1, description="processes per node (one per GPU; CPU: gloo)")
    nnodes: int = Field(1, ge=1, description="nodes")
    node_rank: int = Field(0, ge=0, description="this node's index; node 0 tracks the run and publishes the model")
    master_addr: str = Field("127.0.0.1", description="node 0's address")
    master_port: int = Field(29500, ge=1, le=65535, description="node 0's port")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="fsdp: for models that do not fit one device")


class PretrainConfig(Section):
    """Training on the chunk stage's blocks: its length, optimizer, schedule, precision,
    evaluations and checkpoints."""

    PERFORMANCE_ONLY = frozenset(
        {
            "log_every",
            "eval_every",
            "eval_batches",
            "sample_every",
            "checkpoint_every",
            "keep_checkpoints",
            "distributed",
            "prefetch",
            "activation_checkpointing",
        }
    )

    max_steps: int | None = Field(None, ge=1, description="optimizer steps; default: token_budget / total_batch_tokens")
    token_budget: int | None = Field(None, ge=1, description="training tokens; default: tokens_per_param x parameters")
    tokens_per_param: float = Field(20.0, gt=0, description="Chinchilla's ratio, for the default budget")
    total_batch_tokens: int | None = Field(
        None,
        ge=1,
        description="tokens per optimizer step, all ranks; default: micro_batch x seq_len x ranks (no accumulation)",
    )
    micro_batch: int = Field(8, ge=1, description="sequences per forward pass per rank")
    optimizer: Literal["adamw", "muon"] = Field(
        "muon",
        description="muon: Muon for the blocks' matrices, AdamW with rates of their own for embedding, head and "
        "gains (nanochat's recipe); adamw: one AdamW and one rate for all",
    )
    lr: float | None = Field(
        None, gt=0, description="peak learning rate (muon: the matrices'); default: adamw 0.02/sqrt(n_embd), muon 0.02"
    )
    embedding_lr: float | None = Field(
        None, gt=0, description="muon: the embedding's rate; default 0.2 sqrt(768/n_embd)"
    )
    head_lr: float | None = Field(
        None, gt=0, description="muon: the output layer's rate; default 0.004 sqrt(768/n_embd)"
    )
    gain_lr: float | None = Field(None, gt=0, description="muon: the norms' gains' rate; default: the head's")
    muon_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="muon: the precision of its Newton-Schulz steps; auto: bf16 on GPUs and on CPUs with native "
        "bf16 (AVX512-BF16, AMX), fp32 on other CPUs (which emulate bf16, 3x slower)",
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="the last learning rate, as a share of the peak")
    schedule: Literal["cosine", "wsd"] = Field(
        "wsd", description="after warmup: warmup-stable-decay (flat, then linear down), or cosine decay"
    )
    warmup_steps: int | None = Field(None, ge=0, description="default: muon none, adamw 5% of the steps (at most 200)")
    decay_fraction: float = Field(0.4, gt=0, le=1, description="wsd: the share of steps spent decaying")
    weight_decay: float = Field(
        0.1, ge=0, description="decoupled decay of the matrices (muon: Muon's; its AdamW groups have none)"
    )
    beta1: float = Field(0.9, ge=0, lt=1, description="AdamW's")
    beta2: float = Field(0.95, ge=0, lt=1, description="AdamW's")
    grad_clip: float | None = Field(1.0, gt=0, description="largest gradient norm; null: no clipping")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="the forward and backward passes' autocast; auto: bf16 where the hardware has it natively (GPUs; "
        "CPUs with AVX512-BF16 or AMX), fp16 + loss scaler on older GPUs, fp32 on other CPUs",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU if there is one")
    compile: bool = Field(False, description="torch.compile the model")
    activation_checkpointing: bool = Field(False, description="recompute activations in the backward pass: less memory")
    prefetch: int = Field(4, ge=1, description="micro-batches prepared ahead")
    log_every: int = Field(10, ge=1, description="steps between logged metrics")
    eval_every: int = Field(100, ge=1, description="steps between validations")
    eval_batches: int = Field(20, ge=1, description="validation micro-batches per validation")
    sample_every: int = Field(0, ge=0, description="0: sample only at evaluations")
    sample_prompts: list[str] = Field(
        default_factory=lambda: ["The ", "def "], description="prompts of the sampled continuations"
    )
    sample_tokens: int = Field(48, ge=1, description="tokens per sampled continuation")
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="the latest checkpoints kept; older ones are removed")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @model_validator(mode="after")
    def _muon_needs_whole_matrices(self) -> PretrainConfig:
        d = self.distributed
        if self.optimizer == "muon" and d.strategy == "fsdp" and d.nproc * d.nnodes > 1:
            raise ValueError(
                "optimizer muon orthogonalises whole matrices, which FSDP shards: "
                "use distributed.strategy ddp, or optimizer adamw"
            )
        return self


# ----------------------------------------------------------------------------- fine-tune


class ChatDatasetSource(BaseModel):
    """A `datasets.load_dataset` source of chat (`messages`, or `prompt` + `response`) or
    preference (`prompt`, `chosen`, `rejected`) records."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="a hub dataset name, or a builder such as json, csv, parquet")
    name: str | None = Field(None, description="the dataset's configuration name")
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    split: str = "train"
    streaming: bool = Field(True, description="read records as they download, not after")
    max_examples: int | None = Field(default=None, gt=0, description="read at most this many records")


class LoRAConfig(BaseModel):
    """Low-rank adapters on the chosen projections; merged into the weights at the end."""

    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1, description="rank of the adapters")
    alpha: float = Field(16.0, gt=0, description="the adapters' output is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input")
    targets: list[Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]] = Field(
        default_factory=lambda: ["q_proj", "v_proj"], min_length=1, description="the projections given adapters"
    )


FINETUNE_ADAMW_LR = 3e-4
FINETUNE_MUON_LR = 0.003  # bench: SFT's lowest held-out loss of 0.0004-0.012, with the least forgetting of the best


class FinetuneConfig(Section):
    """The second stage of the recipe: a pretrained model -> a chat model.

    `sft` learns the assistant turns of chat data; `dpo` prefers chosen over rejected replies
    against a frozen copy of the starting model; `distill` trains a smaller student (`student`)
    on the starting model's logits. Without chat data, a question/answer set is built from the
    cleaned corpus (`qa_pairs`)."""

    PERFORMANCE_ONLY = frozenset({"enabled", "eval_every", "log_every", "model_name", "micro_batch"})
    enabled: bool = Field(False, description="the lifecycle fine-tunes (and registers the chat model) when true")
    method: Literal["sft", "dpo", "distill"] = "sft"
    base: str = Field(
        "pretrain", description="pretrain: the lifecycle's model; or models:/<name>@<alias>, a folder, a fingerprint"
    )
    chat_files: list[str] = Field(default_factory=list, description="JSONL chat files: messages or prompt/response")
    chat_datasets: list[ChatDatasetSource] = Field(default_factory=list)
    preference_files: list[str] = Field(default_factory=list, description="dpo: JSONL {prompt, chosen, rejected}")
    preference_datasets: list[ChatDatasetSource] = Field(default_factory=list)
    qa_pairs: int = Field(2000, ge=0, description="without chat data: pairs built from the cleaned corpus (at most)")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="share of the chat data held out for evaluation")
    max_answer_chars: int = Field(600, ge=40, description="pairs built from the corpus: longer answers are trimmed")
    packing: bool = Field(True, description="several chats per row (no padding) instead of one padded chat per row")
    epochs: float = Field(2.0, gt=0, description="passes over the training chats")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; default: epochs over the training chats")
    micro_batch: int = Field(8, ge=1, description="rows per forward pass")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw",
        description="adamw: one AdamW and one rate for all; muon: pretraining's split (Muon for the blocks' "
        "matrices, AdamW for embedding, head and gains) at pretraining's proportions, scaled to `lr`: a lower "
        "held-out chat loss after SFT, but more of pretraining forgotten (docs/benchmarks.md)",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description=f"peak learning rate (muon: the matrices'); default: adamw 3e-4, muon {FINETUNE_MUON_LR}",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="the forward and backward passes' autocast; auto: bf16 where the hardware has it natively "
        "(GPUs; CPUs with AVX512-BF16 or AMX), fp32 elsewhere",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the last learning rate, as a share of the peak")
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0, description="decoupled decay (muon: of the matrices)")
    grad_clip: float | None = Field(1.0, gt=0, description="largest gradient norm; null: no clipping")
    freeze_embeddings: bool = Field(False, description="do not train the token embeddings")
    freeze_blocks: int = Field(0, ge=0, description="freeze the first N transformer blocks")
    lora: LoRAConfig | None = Field(None, description="train low-rank adapters only (merged at the end)")
    dpo_beta: float = Field(0.1, gt=0, description="dpo: how strongly the policy is held to the frozen starting model")
    student: ModelConfig | None = Field(None, description="distill: the student's shape (default: half the depth)")
    distill_temperature: float = Field(2.0, gt=0, description="distill: softmax temperature of the KL term")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL term; the rest is cross-entropy")
    curriculum: Literal["none", "length", "teacher_loss"] = Field(
        "none", description="order the training chats easy to hard (by length or by the starting model's loss)"
    )
    quantize: bool = Field(False, description="also register a dynamic-int8 version for CPU inference")
    eval_every: int = Field(50, ge=1, description="steps between evaluations on the held-out chats")
    log_every: int = Field(10, ge=1, description="steps between logged metrics")
    model_name: str | None = Field(None, description="registered chat model name; default: <name>-chat")

    @model_validator(mode="after")
    def _muon_trains_whole_matrices(self) -> FinetuneConfig:
        if self.optimizer == "muon" and self.lora is not None:
            raise ValueError(
                "optimizer muon orthogonalises whole matrices, not low-rank adapters: use optimizer adamw with lora"
            )
        return self

    @property
    def peak_lr(self) -> float:
        return self.lr or (FINETUNE_MUON_LR if self.optimizer == "muon" else FINETUNE_ADAMW_LR)


class TrackingConfig(Section):
    """Where MLflow records the training runs and registers the models."""

    PERFORMANCE_ONLY = frozenset({"tracking_uri", "experiment", "system_metrics"})
    tracking_uri: str | None = Field(
        None,
        description="default: sqlite:///<workspace>/mlflow.db. A password in it is moved into the environment "
        "(MLFLOW_TRACKING_USERNAME/PASSWORD, PGPASSWORD): never printed, stored or sent to Prefect",
    )
    experiment: str | None = Field(None, description="default: the run's name")
    system_metrics: bool = Field(True, description="log CPU, memory and GPU use with the training metrics")

    @field_validator("tracking_uri")
    @classmethod
    def _credentials_to_env(cls, uri: str | None) -> str | None:
        """The one place a tracking URI enters a config: its credentials leave it here, so that no
        manifest, MLflow artifact, printed line or Prefect parameter made from the config holds them
        (lm_core/secrets.py)."""
        return uri and tracking_credentials_to_env(uri)


# ----------------------------------------------------------------------------- evaluate, register


class GenerationConfig(BaseModel):
    """How the model generates for BLEU and chrF."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(32, ge=1, description="tokens generated per prompt at most")
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    top_k: int | None = Field(None, ge=1, description="sample from the k likeliest tokens only")
    top_p: float | None = Field(
        None, gt=0, le=1, description="sample from the likeliest tokens holding this probability"
    )
    seed: int = Field(0, description="seed of the sampling")


class EvaluateConfig(Section):
    """How a model is scored: perplexity and bits-per-byte on the validation blocks and on any
    extra texts; BLEU and chrF of its generations on prompt/reference pairs."""

    PERFORMANCE_ONLY = frozenset({"batch_size", "device"})
    val_batches: int | None = Field(None, ge=1, description="validation micro-batches to score; null: all")
    batch_size: int = Field(16, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: a GPU if there is one; fp32 either way")
    texts: list[FilesSource] = Field(default_factory=list, description="extra texts to score (txt, md, jsonl)")
    hf_texts: list[HFDatasetSource] = Field(default_factory=list, description="extra `datasets` texts to score")
    stride: int | None = Field(None, ge=1, description="sliding-window step for long texts; default: half the context")
    pair_sets: list[str] = Field(default_factory=list, description="JSONL files of {prompt, reference} pairs")
    heldout_pairs: int = Field(64, ge=0, description="pairs built from held-out documents; 0: none")
    prompt_tokens: int = Field(48, ge=1, description="held-out pairs: tokens of a passage given as the prompt")
    reference_tokens: int = Field(32, ge=1, description="held-out pairs: tokens of its continuation")
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    table_rows: int = Field(20, ge=0, description="samples shown in the results table")


class RegistryConfig(Section):
    """Where a model is registered in MLflow, and the gate a challenger must pass to be champion."""

    # review_timeout_h: how long the flow waits for people, decided after the artifact is published
    PERFORMANCE_ONLY = frozenset({"model_name", "description", "review_timeout_h"})
    model_name: str | None = Field(None, description="registered model name; default: the run's name")
    description: str | None = Field(None, description="the registered model's description")
    min_bpb_gain: float = Field(0.0, ge=0, description="champion if val bits-per-byte is lower by more than this")
    bleu_tolerance: float = Field(0.0, ge=0, description="...and BLEU is not worse by more than this")
    human_review: bool = Field(
        False,
        description="a challenger the gate would make champion stays challenger until people approve it: the "
        "register flow makes a review round and pauses for its votes or a decision in Prefect's UI (docs/review.md). "
        "Hashed only when true: registrations made without it keep their fingerprints",
    )
    review_timeout_h: float = Field(
        72.0, gt=0, description="hours the register flow waits for the review; then the challenger stays challenger"
    )

    def fingerprint_fields(self) -> dict[str, Any]:
        fields = super().fingerprint_fields()
        if not self.human_review:  # off: the registrations' fingerprints from before the gate existed
            del fields["human_review"]
        return fields


class ReviewConfig(Section):
    """Human review rounds (`lmforge review`): how a round's answers are generated, the port its
    page is served on, and what the promotion gate asks of its votes. No stage reads it."""

    prompts: int = Field(50, ge=1, description="prompts in a new round (all the source has, if fewer)")
    max_new_tokens: int = Field(128, ge=1, description="tokens per answer at most (fewer if the context is short)")
    temperature: float = Field(0.8, ge=0, description="0: greedy")
    top_k: int | None = Field(50, ge=1, description="sample from the k likeliest tokens only")
    seed: int = Field(0, description="seeds a new round: its prompts, answers, blind order, results' bootstrap")
    min_votes: int = Field(20, ge=1, description="the gate waits for this many votes before it decides")
    min_win_rate: float = Field(
        0.5, ge=0, le=1, description="the gate approves a challenger whose win rate (ties half) is above this"
    )
    port: int = Field(8765, ge=0, le=65535, description="`lmforge review serve`'s port on 127.0.0.1; 0: any free")


# ----------------------------------------------------------------------------- schedules

_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?LW#]+$")


def _is_cron(cron: str | None) -> str | None:
    if cron is None or cron.strip() in _CRON_MACROS:
        return cron
    fields = cron.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(f"not a cron string (5 fields: minute hour day month weekday, e.g. '0 2 * * *'): {cron!r}")
    return cron


class _Schedules(Section):
    """When the deployments of `lmforge serve` and `lmforge deploy` run: a cron string per flow
    (minute hour day-of-month month day-of-week), or null for on demand only. Changes nothing
    that a stage produces, so no fingerprint depends on it."""

    # `register` is also a method every pydantic model inherits (ABCMeta.register): such a flow's
    # field is `register_` in Python and `register` in YAML, `--set` and printed configs.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_by_name=True, serialize_by_alias=True)

    timezone: str = Field("UTC", description="IANA time zone the cron strings are read in")
    training_timeout_h: float | None = Field(
        None,
        gt=0,
        description="fail a pretrain/finetune task that runs longer (hours); null: no limit. A training "
        "resumes from its last checkpoint when run again",
    )
    # Not a stage's flow: review rounds (flows/review.py), on demand unless a team schedules them.
    review: Annotated[str | None, AfterValidator(_is_cron)] = Field(
        None, description="when the review flow makes a review round (flows/review.py); null: on demand"
    )

    @field_validator("timezone")
    @classmethod
    def _is_timezone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (IANA names, e.g. UTC, Europe/Paris)") from None
        return tz

    def cron(self, flow: str) -> str | None:
        """The cron string of a flow (one of lm_core.stages.SCHEDULED_FLOWS)."""
        return getattr(self, _field_name(flow))


def _field_name(flow: str) -> str:
    return f"{flow}_" if hasattr(BaseModel, flow) else flow


# A cron field per flow a team schedules (lm_core/stages.py: the data half, each stage that runs
# alone, the lifecycle), by default on demand but for those with a default cron.
SchedulesConfig = create_model(
    "SchedulesConfig",
    __base__=_Schedules,
    **{
        _field_name(flow): (
            Annotated[str | None, AfterValidator(_is_cron)],
            Field(DEFAULT_CRONS.get(flow), alias=flow, description=f"when the {flow} flow runs; null: on demand"),
        )
        for flow in SCHEDULED_FLOWS
    },
)


# ----------------------------------------------------------------------------- run


class RunnerConfig(Section):
    """Where per-shard tasks run. Threads suit I/O and code that releases the GIL (tokenizers);
    processes give true parallelism to pure-Python work such as HTML extraction in `clean`;
    `dask` and `ray` spread the shards over a cluster (a local one by default, or `address`)."""

    PERFORMANCE_ONLY = frozenset({"kind", "max_workers", "address"})
    kind: Literal["threads", "processes", "dask", "ray"] = "threads"
    max_workers: int | None = Field(
        None, gt=0, description="parallel per-shard tasks (workers of a local Dask/Ray cluster); default: CPU count"
    )
    address: str | None = Field(
        None, description="dask: an existing scheduler (tcp://host:8786); ray: an existing cluster (ray://host:10001)"
    )

    @model_validator(mode="after")
    def _address_needs_a_cluster(self) -> RunnerConfig:
        if self.address and self.kind not in ("dask", "ray"):
            raise ValueError(f"runner.address is for kind dask or ray, not {self.kind!r}")
        return self


class Config(BaseModel):
    """A whole lmforge run. The defaults are the demo: crawl Python's own documentation site."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    name: str = Field(
        "lmforge-demo",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the run's name: its MLflow experiment, registered model and deployments are named after it",
    )
    workspace: Path = Field(
        Path("workspace"),
        description="the folder of every artifact and of the MLflow and Prefect stores; "
        "if not given: LMFORGE_WORKSPACE, else ./workspace",
    )
    seed: int = Field(1337, description="seeds training and fine-tuning (initialisation, data order)")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    crawl: CrawlConfig = Field(default_factory=CrawlConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)

    @property
    def tracking_uri(self) -> str:
        """MLflow's store: `tracking.tracking_uri`, or the workspace's own SQLite database."""
        return self.tracking.tracking_uri or default_tracking_uri(self.workspace)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


def default_tracking_uri(workspace: str | Path) -> str:
    return f"sqlite:///{Path(workspace).resolve() / 'mlflow.db'}"


# ----------------------------------------------------------------------------- loading


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ("a.b", c), with c read as YAML so numbers, booleans and lists keep their type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. crawl.max_pages=200")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _describe(errors: list[dict]) -> str:
    lines = []
    for e in errors:
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = e.get("input")
        shown = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {mask_urls(repr(got))})"
        lines.append(f"  {field}: {e['msg']}{shown}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults), apply `key=value` overrides, validate everything.

    The workspace is, by precedence: `--set workspace=...`, the file's `workspace`, the
    `LMFORGE_WORKSPACE` environment variable, `./workspace`."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            tree = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, not {type(tree).__name__}")
    tree = copy.deepcopy(tree)
    if "workspace" not in tree and os.environ.get("LMFORGE_WORKSPACE"):
        tree["workspace"] = os.environ["LMFORGE_WORKSPACE"]
    for o in overrides:
        _set_dotted(tree, *parse_override(o))
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{where}:\n{_describe(e.errors())}") from None
