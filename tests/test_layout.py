"""The package's shape: no import cycles, imports follow the pipeline order, files stay small.

Every import counts, including those inside functions (they still run, only later). These tests
read the source (ast); nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_inrst"
ROOT = "napari_inrst"
#: the pipeline order: a module may import from its own package and from packages earlier here
ORDER = ["errors", "generators", "io", "stack", "measure", "align", "field", "render", "evaluate", "synthetic", "viewer", "_qt", "cli"]
MAX_LINES = 450
MAX_LINES_QT = 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (``from pkg import submodule`` counts the submodule)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                mod = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith(ROOT):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        work = [(v, iter(sorted(g[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def rank(module: str) -> int | None:
    parts = module.split(".")
    return ORDER.index(parts[1]) if len(parts) > 1 and parts[1] in ORDER else None


def test_the_tool_finds_a_cycle_and_an_order_violation():
    g = {"napari_inrst.a": {"napari_inrst.b"}, "napari_inrst.b": {"napari_inrst.c"},
         "napari_inrst.c": {"napari_inrst.a"}, "napari_inrst.d": set()}
    assert cycles(g) == [["napari_inrst.a", "napari_inrst.b", "napari_inrst.c"]]
    assert rank("napari_inrst.io.readers") < rank("napari_inrst.field.model")


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(" ⇄ ".join(c) for c in found)


def test_imports_follow_the_pipeline_order():
    bad = []
    for m, targets in graph().items():
        r = rank(m)
        for t in targets:
            rt = rank(t)
            if r is not None and rt is not None and rt > r:
                bad.append(f"{m} imports {t}")
    assert not bad, "imports against the order " + " → ".join(ORDER) + ":\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("limit_dir, limit", [(None, MAX_LINES), ("_qt", MAX_LINES_QT)])
def test_files_stay_small(limit_dir, limit):
    root = SRC / limit_dir if limit_dir else SRC
    big = {str(p.relative_to(SRC)): n for p in root.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit}
    assert not big, f"files over {limit} lines: {big}"


def test_widget_modules_keep_their_annotations_live():
    """napari finds a dock widget's ``viewer`` argument by its annotation; a module with postponed
    annotations (``from __future__ import annotations``) turns it into a string napari does not
    match, and the widget fails to open from the Plugins menu."""
    import re

    manifest = (SRC / "napari.yaml").read_text(encoding="utf-8")
    widgets = set(re.findall(r"python_name: (napari_inrst\._qt[\w.]*):", manifest))
    assert widgets, "no widgets found in napari.yaml"
    mods = modules()
    postponed = []
    for w in widgets:
        tree = ast.parse(mods[w].read_text(encoding="utf-8"))
        if any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
               any(a.name == "annotations" for a in n.names) for n in tree.body):
            postponed.append(w)
    assert not postponed, f"widget modules with postponed annotations: {postponed}"
