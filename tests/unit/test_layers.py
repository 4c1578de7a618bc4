"""The package's layers: every import points down, and no two modules import
each other, directly or round a circle.

LAYERS is the one statement of the order (docs/architecture.md draws it).
Every import counts: at module level, inside a function, and under
``if TYPE_CHECKING:`` (a type-only import is still a dependency).
"""

from __future__ import annotations

import ast
import os
from typing import Optional

import pytest

PKG = os.path.join(os.path.dirname(__file__), "..", "..", "tcflow")

# lowest first; a module may import from its own layer and the ones before it
LAYERS = ("model", "system", "bpf", "host", "containers", "engine", "output", "cli", "testing")
TOP_LEVEL = {"__init__", "__main__"}  # the public face: may import any layer; no layer imports it
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 450
# what only the engine's loop calls: timing, and the agent's steps it times
SCHEDULING = ("monotonic", "select", "discover", "tick_flows", "unwatch_deleted", "sync", "load_spare_set")


def module_name(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return "tcflow." + rel.removesuffix(".__init__") if rel != "__init__" else "tcflow"


def modules(root: str) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                p = os.path.join(d, f)
                out[module_name(p, root)] = p
    return out


def imports(path: str, name: str, known: set[str]) -> set[str]:
    """Every tcflow module ``name`` imports, wherever the import stands."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import mod` names a module; `from mod import thing` names mod
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def layer_of(name: str) -> Optional[str]:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def problems(root: str) -> list[str]:
    mods = modules(root)
    known = set(mods)
    graph = {m: imports(p, m, known) for m, p in mods.items()}
    out = []
    for m, deps in sorted(graph.items()):
        lm = layer_of(m)
        if lm is None:
            if m.rpartition(".")[2] not in TOP_LEVEL and m != "tcflow":
                out.append(f"{m}: a top-level module outside the layers {LAYERS}")
            continue
        if lm not in LAYERS:
            out.append(f"{m}: in {lm}/, which is not a layer {LAYERS}")
            continue
        for d in sorted(deps):
            ld = layer_of(d)
            if ld is None:
                out.append(f"{m} imports {d}, the package's public face: import the module it comes from")
            elif ld in LAYERS and LAYERS.index(ld) > LAYERS.index(lm):
                out.append(f"{m} ({lm}) imports {d} ({ld}), a later layer")
    out += [f"import circle: {' -> '.join(c)}" for c in circles(graph)]
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group) + [sorted(group)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_imports_point_down_and_never_circle() -> None:
    assert problems(PKG) == []


def test_folder_listing_is_the_architecture() -> None:
    top = [f for f in os.listdir(PKG) if f.endswith(".py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    subs = sorted(d for d in os.listdir(PKG) if os.path.isfile(os.path.join(PKG, d, "__init__.py")))
    assert subs == sorted(LAYERS)
    long = {p: n for p in modules(PKG).values() if (n := sum(1 for _ in open(p))) > MAX_MODULE_LINES}
    assert long == {}


def test_cli_does_no_scheduling() -> None:
    """The CLI parses, calls and renders; the engine's loop decides when."""
    for path in modules(os.path.join(PKG, "cli")).values():
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and
                                                        node.module else [])
                assert not {"select", "selectors"} & set(names), f"cli/{os.path.basename(path)} imports select"
            if isinstance(node, ast.Attribute) and node.attr in SCHEDULING:
                raise AssertionError(f"cli/{os.path.basename(path)}:{node.lineno} schedules ({node.attr})")


LAYOUT = {
    "model/a.py": "",
    "bpf/__init__.py": "", "model/__init__.py": "", "host/__init__.py": "",
    "bpf/b.py": "from tcflow.model import a\n",
}


@pytest.mark.parametrize("extra, expected", [
    ({}, []),
    ({"model/a.py": "def f():\n    from tcflow.bpf import b\n"},
     ["tcflow.model.a (model) imports tcflow.bpf.b (bpf), a later layer",
      "import circle: tcflow.bpf.b -> tcflow.model.a -> tcflow.bpf.b"]),
    ({"host/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tcflow.host import d\n",
      "host/d.py": "from . import c\n"},
     ["import circle: tcflow.host.c -> tcflow.host.d -> tcflow.host.c"]),
    ({"host/c.py": "from ..bpf.b import x\n"}, []),
    ({"host/c.py": "import tcflow\n"},
     ["tcflow.host.c imports tcflow, the package's public face: import the module it comes from"]),
    ({"misc.py": ""}, ["tcflow.misc: a top-level module outside the layers " + str(LAYERS)]),
])
def test_the_walk_finds_upward_imports_and_circles(tmp_path, extra: dict[str, str], expected: list[str]) -> None:
    """The test of the test: a reintroduced circle or upward import fails it."""
    root = tmp_path / "tcflow"
    for rel, text in {"__init__.py": "", **LAYOUT, **extra}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    assert problems(str(root)) == expected
