"""The documentation cannot drift: the configuration reference is what the generator writes from
lm_core/config.py, and every relative link in README.md and docs/*.md reaches a file, and a
heading when it names one."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"(`+).*?\1", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", REPO / "docs" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_what_the_generator_writes():
    page = REPO / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == generator().render(), (
        "docs/configuration.md is out of date: run .venv/bin/python docs/gen_config_reference.py"
    )


def test_configuration_reference_names_every_section_and_field():
    from lm_core.config import Config

    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name, field in Config.model_fields.items():
        assert f"`{name}`" in text
        section = field.default_factory() if field.default_factory else None
        for sub in type(section).model_fields if section is not None else ():
            key = type(section).model_fields[sub].alias or sub
            assert f"| `{key}` |" in text, f"{name}.{key} missing"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        s = slug(heading)
        n = seen.get(s, 0)
        seen[s] = n + 1
        found.add(s if n == 0 else f"{s}-{n}")
    return found


def links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_slug_follows_github():
    assert slug("Both UIs at once: `lmforge server`") == "both-uis-at-once-lmforge-server"
    assert slug("`crawl.hf_dataset[]`") == "crawlhf_dataset"
    assert slug("Clean: speed and memory") == "clean-speed-and-memory"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_a_file_and_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, "\n".join(broken)
