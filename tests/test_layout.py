"""The package's layout: data flows one way (corpus -> npz -> Dataset -> model -> checkpoint -> generation ->
server), so the imports between tangpoem's modules form no circle and none runs up a stage."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tangpoem"

# Each module's stage, lowest first; a module may import only modules of its own stage or below.
STAGES = [
    {"errors", "device", "config", "native", "prosody"},
    {"corpus", "fastlstm"},
    {"data", "model"},
    {"dataset", "checkpoint", "loss"},
    {"export", "generation.request", "generation.shapes", "generation.sampling", "generation.plan"},
    {"generation.rules", "generation.steps"},
    {"generation.guidance", "generation.keywords", "generation.lookahead"},
    {"generation.decoder"},
    {"generation.poet", "generation"},
    {"evaluate", "generate"},
    {"train", "serve"},
]
STAGE = {name: level for level, names in enumerate(STAGES) for name in names}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name:
            found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The tangpoem modules a file imports anywhere in it (inside functions too: a lazy import is still a
    dependency), as names relative to the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("tangpoem."):
                short = name.removeprefix("tangpoem.")
                if short in known:
                    out.add(short)
            elif name == "tangpoem":
                continue
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_every_module_has_a_stage():
    missing = sorted(set(modules()) - set(STAGE))
    assert not missing, f"give these modules a stage in STAGES: {missing}"


def test_no_module_imports_one_above_it():
    edges = graph()
    assert sum(len(targets) for targets in edges.values()) > 30  # the walk found the imports
    upward = [(a, b) for a, targets in edges.items() for b in targets if STAGE[b] > STAGE[a]]
    assert not upward, f"imports that run up a stage: {upward}"


def test_the_imports_form_no_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state:
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, f"a circle of imports: {' -> '.join(cycle)}"
    assert len(state) == len(edges)


def test_the_check_sees_a_circle_when_there_is_one(tmp_path, monkeypatch):
    """The walk itself: two modules that import each other are found."""
    (tmp_path / "a.py").write_text("from tangpoem.b import x\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("def f():\n    import tangpoem.a\n", encoding="utf-8")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", tmp_path)
    assert graph() == {"a": {"b"}, "b": {"a"}}
