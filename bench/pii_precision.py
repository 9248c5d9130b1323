"""Precision and recall of PII scrubbing on the labelled set, and its throughput; old vs new.

    .venv/bin/python bench/pii_precision.py                 # the table, throughput on 2 MB of text
    .venv/bin/python bench/pii_precision.py --errors phone  # also list the new scrubber's misses and false alarms

Runs `scrub_pii` over bench/data/pii_eval.jsonl (built by bench/pii_eval_set.py) and prints, per
kind, precision and recall, span-level: a positive span counts as found only if exactly that span
was replaced, by that kind's replacement; a replacement in a negative, or one in a positive that
is not a labelled span, is a false positive. The same figures are printed for the scrubber as it
is at `--old-rev` (default 187eeef, the last commit before scrubbing was made precise), loaded
from git into a temporary module.
Then: the same on batches B and C alone (examples written after the scrubber was tuned on the
rest: how it generalises), and the code policy measured: the texts holding fenced code, scored as
they are and with their fence lines blanked out, which makes the scrubber read the code as prose.

Throughput (MB/s) is measured on realistic text: pydoc's plain-text pages of standard-library
modules (what the demo crawls: prose, signatures, numbers, versions), with their example blocks
fenced as the clean stage writes them; and on the labelled set itself, which is dense with
candidates.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lm_core.config import PIIConfig  # noqa: E402

DATA = REPO / "bench" / "data" / "pii_eval.jsonl"
KINDS = ("phone", "ip", "email", "secret")
TARGETS = {"precision": 0.98, "recall": 0.95}


def load_set(path: Path = DATA) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def replaced_spans(original: str, scrubbed: str, tokens: dict[str, str]) -> list[tuple[int, int, str]] | None:
    """(start, end, kind) in `original` of each replacement found in `scrubbed`; None if they do not align.

    The text between replacements is unchanged, so a pattern made of those pieces with a group for
    each replacement, matched against the original, gives back what each replacement stood for."""
    parts = re.split("(" + "|".join(map(re.escape, tokens)) + ")", scrubbed)
    if len(parts) == 1:
        return []
    pattern = re.escape(parts[0]) + "".join(f"(.+?){re.escape(lit)}" for lit in parts[2::2])
    m = re.fullmatch(pattern, original, re.S)
    if m is None:
        return None
    return [(m.start(i), m.end(i), tokens[tok]) for i, tok in enumerate(parts[1::2], 1)]


def score(scrub, records: list[dict], cfg: PIIConfig, errors: list | None = None) -> dict[str, dict]:
    """Per kind: tp, fn, fp, positive spans, negative texts, precision and recall (see the docstring)."""
    tokens = {cfg.phone_replacement: "phone", cfg.ip_replacement: "ip", cfg.email_replacement: "email",
              cfg.secret_replacement: "secret"}  # fmt: skip
    c = {k: Counter() for k in KINDS}
    for r in records:
        kind, labelled = r["kind"], {tuple(s) for s in r["spans"]}
        found = replaced_spans(r["text"], scrub(r["text"], cfg).text, tokens)
        if found is None:  # the scrubber changed text outside its replacements: count it as a false alarm
            found = [(0, len(r["text"]), "?")]
        hits = {(s, e) for s, e, k in found if (s, e) in labelled and k == kind}
        c[kind]["spans"] += len(labelled)
        c[kind]["texts" if labelled else "negatives"] += 1
        c[kind]["tp"] += len(hits)
        c[kind]["fn"] += len(labelled - hits)
        wrong = [(s, e, k) for s, e, k in found if (s, e) not in hits]
        c[kind]["fp"] += len(wrong)
        if errors is not None:
            errors += [(r, "missed", r["text"][s:e]) for s, e in sorted(labelled - hits)]
            errors += [(r, f"replaced as {k}", r["text"][s:e]) for s, e, k in wrong]
    for k in KINDS:
        tp, fn, fp = c[k]["tp"], c[k]["fn"], c[k]["fp"]
        c[k]["precision"] = tp / (tp + fp) if tp + fp else 1.0
        c[k]["recall"] = tp / (tp + fn) if tp + fn else 1.0
    return c


def unfenced(record: dict) -> dict:
    """`record` with its fence lines blanked (same length, so the spans hold): its code read as prose."""
    text = re.sub(r"^ {0,3}`{3,}[^`\n]*$", lambda m: " " * len(m.group()), record["text"], flags=re.M)
    return {**record, "text": text}


def old_scrubber(rev: str):
    """`scrub_pii` as lm_core/clean/pii.py is at `rev`, imported from a temporary file."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:lm_core/clean/pii.py"],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "pii_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pii_old", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_old"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.scrub_pii


def pydoc_pages(megabytes: float) -> list[str]:
    """pydoc's plain-text pages of standard-library modules, in a fixed order, until `megabytes`;
    their indented example blocks (">>>" sessions) fenced as the clean stage writes code."""
    import pydoc
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    names = sorted(p.stem for p in stdlib.glob("*.py") if not p.stem.startswith("_") and p.stem not in
                   {"antigravity", "this", "pydoc", "turtle", "tkinter", "idlelib", "__main__"})  # fmt: skip
    pages, size = [], 0
    for name in names:
        try:
            page = pydoc.render_doc(name, renderer=pydoc.plaintext)
        except Exception:  # a module that does not import here
            continue
        page = re.sub(
            r"((?:^ +>>> .*\n(?: +\S.*\n)*)+)", lambda m: "```python\n" + m.group(1) + "```\n", page, flags=re.M
        )
        pages.append(page)
        size += len(page.encode())
        if size >= megabytes * 1e6:
            break
    return pages


def throughput(scrub, docs: list[str], cfg: PIIConfig, repeats: int = 5) -> float:
    """MB/s of `scrub` over `docs`, best of `repeats`, each starting with empty caches."""
    from lm_core.clean import pii

    size = sum(len(d.encode()) for d in docs)
    best = float("inf")
    for _ in range(repeats):
        if hasattr(pii, "_valid_phone"):
            pii._valid_phone.cache_clear()  # a repeat would otherwise find every number validated
        start = time.perf_counter()
        for d in docs:
            scrub(d, cfg)
        best = min(best, time.perf_counter() - start)
    return size / best / 1e6


def print_table(*columns: tuple[str, dict]) -> None:
    """Per kind: labelled spans, negatives, then precision, recall and false positives of each column."""
    head = " | ".join(f"{n + ' P':>8s} {n + ' R':>8s} {n + ' FP':>8s}" for n, _ in columns)
    print(f"{'kind':7s} {'spans':>5s} {'negs':>5s} | {head}")
    for k in KINDS:
        first = columns[0][1][k]
        cells = " | ".join(f"{c[k]['precision']:8.3f} {c[k]['recall']:8.3f} {c[k]['fp']:8d}" for _, c in columns)
        print(f"{k:7s} {first['spans']:5d} {first['negatives']:5d} | {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-rev", default="187eeef", help="git revision of the scrubber to compare with")
    parser.add_argument("--errors", choices=KINDS, help="list the new scrubber's errors on this kind")
    parser.add_argument("--mb", type=float, default=2.0, help="MB of pydoc text for the throughput")
    args = parser.parse_args()

    from lm_core.clean.pii import scrub_pii

    old = old_scrubber(args.old_rev)
    records, cfg = load_set(), PIIConfig()
    errors: list = []
    new_scores, old_scores = score(scrub_pii, records, cfg, errors), score(old, records, cfg)
    print(f"labelled set: {DATA.relative_to(REPO)}, {len(records)} texts; targets: precision >= "
          f"{TARGETS['precision']}, recall >= {TARGETS['recall']}\n")  # fmt: skip
    print_table(("old", old_scores), ("new", new_scores))
    later = [r for r in records if r["source"].startswith(("batch B", "batch C"))]
    print(f"\nbatches B and C only ({len(later)} texts, written after tuning on the rest):")
    print_table(("old", score(old, later, cfg)), ("new", score(scrub_pii, later, cfg)))
    fenced = [r for r in records if "```" in r["text"]]
    print(f"\ntexts with fenced code ({len(fenced)}), new scrubber: as code, and read as prose (fences blanked):")
    print_table(("code", score(scrub_pii, fenced, cfg)), ("prose", score(scrub_pii, list(map(unfenced, fenced)), cfg)))
    if args.errors:
        print(f"\nnew scrubber's errors on {args.errors}:")
        for r, what, span in errors:
            if r["kind"] == args.errors:
                print(f"  {r['id']} {what}: {span!r} in {r['text'][:160]!r}  ({r['source'][:70]})")

    pages = pydoc_pages(args.mb)
    size = sum(len(p.encode()) for p in pages) / 1e6
    dense = [r["text"] for r in records]
    print(f"\nthroughput, MB/s (best of 5):     {'old':>7s} {'new':>7s}  new/old time")
    for name, corpus in ((f"{len(pages)} pydoc pages, {size:.1f} MB", pages), ("labelled set (dense)", dense)):
        t_old, t_new = throughput(old, corpus, cfg), throughput(scrub_pii, corpus, cfg)
        print(f"  {name:30s}  {t_old:7.2f} {t_new:7.2f}  {t_old / t_new:5.2f}x")


if __name__ == "__main__":
    main()
