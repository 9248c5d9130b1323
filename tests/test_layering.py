"""lm_core's import graph, read from its `import` statements (those inside functions too): the
library imports no orchestration code, has no import cycle, and its model half is layered one way.

    model     the leaves: the GPT, the model folder, the chat template, int8 weights, the loss
              sum, model-spec resolution, TextModel, export
    train     < finetune < evaluate < review < registry

A module imports only from its own layer or the layers below it; the rest of lm_core (crawl,
clean, tokenize, chunk, the workspace, the config) imports nothing of the model half, but for
the evaluation sets, which are data: the chunk stage cuts them out of the training text.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LM_CORE = Path(__file__).resolve().parents[1] / "lm_core"
ORCHESTRATION = ("prefect", "tasks", "flows", "deployments", "lmforge")
MODEL_LEAVES = (
    "lm_core.model",
    "lm_core.model_folder",
    "lm_core.tokenize.chat_template",
    "lm_core.quantize",
    "lm_core.token_loss",
    "lm_core.model_spec",
    "lm_core.textgen",
    "lm_core.export",
)
# The model half, bottom first: each entry is a layer, named by its modules or its package.
LAYERS: tuple[tuple[str, ...], ...] = (
    MODEL_LEAVES,
    ("lm_core.train",),
    ("lm_core.finetune",),
    ("lm_core.evaluate",),
    ("lm_core.review",),
    ("lm_core.registry",),
)

DATA_READS = {("lm_core.chunk", "lm_core.evaluate.pairs"), ("lm_core.chunk", "lm_core.evaluate.sets")}


def module_name(path: Path) -> str:
    parts = path.relative_to(LM_CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(LM_CORE.rglob("*.py"))}


def imports(name: str) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement of module `name`, at any depth. A
    `from package import name` counts as importing the submodule when `name` is one."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up `level - 1` packages
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in MODULES else base, node.lineno))
    return found


def internal_graph() -> dict[str, set[str]]:
    """lm_core module -> the lm_core modules it imports (by their nearest known module)."""
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        targets = set()
        for target, _ in imports(name):
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("lm_core") and target not in (name, "lm_core"):
                targets.add(target)
        graph[name] = targets
    return graph


def layer_of(name: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in layer):
            return i
    return None


def test_the_graph_is_read_from_function_level_imports_too():
    """The walk must see what a module imports inside its functions, or the checks below are blind."""
    graph = internal_graph()
    assert "lm_core.finetune.build" in graph["lm_core.finetune.stage"]  # imported inside run_finetune
    assert "lm_core.evaluate.perplexity" in graph["lm_core.evaluate.stage"]


def test_lm_core_imports_no_orchestration_code():
    bad = [
        f"{name}:{line} imports {target}"
        for name in MODULES
        for target, line in imports(name)
        if target.split(".")[0] in ORCHESTRATION
    ]
    assert not bad, "lm_core is the library: it never imports Prefect or the layers above it\n" + "\n".join(bad)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once all it reaches is explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_lm_core_has_no_import_cycle():
    cycle = find_cycle(internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_model_half_imports_only_downwards():
    graph = internal_graph()
    upward = []
    for name, targets in graph.items():
        mine = layer_of(name)
        for target in sorted(targets):
            theirs = layer_of(target)
            if theirs is None:
                continue
            if mine is None:
                if any(name.startswith(pkg + ".") and target == sets for pkg, sets in DATA_READS):
                    continue
                upward.append(f"{name} (not the model half) imports {target}")
            elif theirs > mine:
                upward.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "model < train < finetune < evaluate < review < registry, one way:\n" + "\n".join(upward)


def test_every_declared_layer_exists():
    """A renamed module must be renamed here too, or the layering test would check nothing of it."""
    missing = [m for layer in LAYERS for m in layer if m not in MODULES]
    assert not missing, f"declared in LAYERS but not in lm_core: {missing}"


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_find_cycle(graph, expected):
    assert find_cycle(graph) == expected
