"""The package's imports flow one way: no import cycle between modules, and no module imports
a stage downstream of its own (the order written in docs/architecture.md, "Stage order").

Every ``import`` of ``src/disyre`` counts, those inside functions included; ``from . import x``
is resolved, and ``from package import name`` counts as an import of ``package.name`` when
that is a module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "disyre"
DOC = ROOT / "docs" / "architecture.md"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = ["disyre", *path.relative_to(src).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted(src.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The disyre modules that module ``name`` (file ``path``) imports, anywhere in it."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def add(target: str) -> None:
        # the deepest known module that ``target`` names (a name in a module -> that module)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "disyre":
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "disyre":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                add(sub if sub in known else mod)
    return out


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    mods = all_modules(src)
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def stage_order(doc: Path = DOC) -> dict[str, int]:
    """``{module or package prefix: rank}`` from the table under "## Stage order"."""
    text = doc.read_text()
    section = text.split("## Stage order", 1)[1].split("\n## ", 1)[0]
    order: dict[str, int] = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if not m:
            continue
        for entry in re.findall(r"`([^`]+)`", m.group(2)):
            order[entry] = int(m.group(1))
    return order


def rank_of(module: str, order: dict[str, int]) -> int:
    rel = module.split(".")[1:]
    keys = ["__init__.py"] if not rel else [f"{rel[0]}/", f"{rel[0]}.py"]
    for k in keys:
        if k in order:
            return order[k]
    raise KeyError(f"{module}: no stage in docs/architecture.md's stage order")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def backward_imports(graph: dict[str, set[str]], order: dict[str, int]) -> list[str]:
    return sorted(f"{a} (stage {rank_of(a, order)}) imports {b} (stage {rank_of(b, order)})"
                  for a, deps in graph.items() for b in deps
                  if rank_of(b, order) > rank_of(a, order))


def test_the_stage_order_is_in_the_doc_and_covers_every_module():
    order = stage_order()
    assert order["config.py"] == order["io_utils.py"] == order["runtime.py"] == 0
    ranks = [order[k] for k in ("data/", "corruption/", "methods/", "model.py", "training/",
                                "inference/", "preprocessing/", "evaluation/", "benchmark.py",
                                "cli/")]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    for m in all_modules():
        rank_of(m, order)  # raises for a module the doc does not place


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_against_the_stage_order():
    bad = backward_imports(import_graph(), stage_order())
    assert not bad, "imports against the stage order:\n" + "\n".join(bad)


def test_the_checker_sees_a_backward_import_inside_a_function(tmp_path):
    """The checks themselves: a lazy backward import and a cycle, in a copy of a package."""
    pkg = tmp_path / "disyre"
    (pkg / "data").mkdir(parents=True)
    (pkg / "inference").mkdir()
    for p in ("__init__.py", "config.py", "data/__init__.py", "inference/__init__.py"):
        (pkg / p).write_text("")
    (pkg / "data" / "cache.py").write_text(
        "from ..config import X\n\ndef f():\n    from disyre.inference import result\n")
    (pkg / "inference" / "result.py").write_text("from disyre.data import cache\n")
    graph = import_graph(pkg)
    assert graph["disyre.data.cache"] == {"disyre.config", "disyre.inference.result"}
    assert cycles(graph) == [["disyre.data.cache", "disyre.inference.result"]]
    order = {"__init__.py": 0, "config.py": 0, "data/": 1, "inference/": 5}
    assert backward_imports(graph, order) == [
        "disyre.data.cache (stage 1) imports disyre.inference.result (stage 5)"]


@pytest.mark.parametrize("module", ["disyre.inference.result", "disyre.inference.scoring"])
def test_the_result_modules_import_no_network_code(module):
    assert import_graph()[module] <= {"disyre.data.intensity", "disyre.data.nifti"}
