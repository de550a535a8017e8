"""The import rules of docs/architecture.md, checked on the source: a forbidden import (a
layer reaching up, or sideways where the doc says it must not) fails here by name."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server" / "ponder"

ALLOWED: dict[str, set[str]] = {
    # ground floor: the data and errors that cross every layer
    "types": set(),
    "errors": set(),
    # leaf utilities
    "stops": set(),
    "metrics": set(),
    "config": set(),
    "answers": {"errors"},
    "calibration": set(),
    # domain
    "strategies": {"types", "errors", "answers", "stops"},
    "engines": {"types", "errors", "stops", "config"},
    "runner": {"types", "errors", "strategies", "metrics", "calibration"},
    # entry points
    "api": {
        "types",
        "errors",
        "answers",
        "config",
        "engines",
        "metrics",
        "runner",
        "strategies",
        "calibration",
        "__init__",
    },
    "eval": {
        "types",
        "errors",
        "answers",
        "config",
        "engines",
        "runner",
        "strategies",
        "calibration",
    },
    "export_hf": {"engines"},
    "cli": {
        "api",
        "config",
        "engines",
        "eval",
        "export_hf",
        "runner",
        "strategies",
        "answers",
        "calibration",
    },
    "__init__": set(),
}
"""Layer -> the Ponder layers it may import (besides itself)."""


def _module(path: Path) -> tuple[str, str]:
    """(dotted module, its package) of a source file under server/ponder."""
    parts = ("ponder", *path.relative_to(SERVER).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def _targets(node: ast.AST, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        prefix = ".".join(base)
        if node.module:
            return [f"{prefix}.{node.module}"]
        return [_submodule_or_package(prefix, a.name) for a in node.names]
    return [node.module or ""]


def _submodule_or_package(package: str, name: str) -> str:
    """`from package import name`: the submodule when `name` is one, else the package."""
    folder = SERVER.joinpath(*package.split(".")[1:])
    if (folder / f"{name}.py").exists() or (folder / name).is_dir():
        return f"{package}.{name}"
    return package


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "ponder":
        return ""
    return parts[1] if len(parts) > 1 else "__init__"


def import_edges() -> set[tuple[str, str, str]]:
    """(layer, imported layer, where) for every import of Ponder code, lazy ones included."""
    edges = set()
    for path in SERVER.rglob("*.py"):
        module, package = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package):
                to = _layer(target)
                if to and to != _layer(module):
                    edges.add((_layer(module), to, f"{path.relative_to(SERVER)}:{node.lineno}"))
    return edges


def test_no_forbidden_imports() -> None:
    edges = import_edges()
    assert edges, "no imports found: the scan is broken"
    forbidden = sorted(
        f"{where}: {src} imports {dst}"
        for src, dst, where in edges
        if dst not in ALLOWED.get(src, set())
    )
    assert not forbidden, "imports that docs/architecture.md forbids:\n" + "\n".join(forbidden)


def test_every_layer_is_named_in_the_rules() -> None:
    layers = {_layer(_module(p)[0]) for p in SERVER.rglob("*.py")}
    assert layers <= set(ALLOWED), f"layers without rules: {sorted(layers - set(ALLOWED))}"


def test_the_scan_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: an engine importing the API would be reported."""
    source = "from ..api.render import usage\n"
    node = ast.parse(source).body[0]
    assert _targets(node, "ponder.engines") == ["ponder.api.render"]
    assert "api" not in ALLOWED["engines"]


def test_the_ground_floor_imports_nothing_of_ponder() -> None:
    for name in ("types.py", "errors.py"):
        tree = ast.parse((SERVER / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.ImportFrom) and node.level), name


def test_the_docs_worked_strategy_example_runs(tmp_path: Path) -> None:
    """docs/architecture.md's "shortest answer" module, loaded as a strategies module, is a
    valid strategy object that decides on samples."""
    import importlib.util
    import re

    from ponder.answers import AnswerSpec
    from ponder.strategies import SelectOptions

    from .factories import make_sample

    doc = (SERVER.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    path = tmp_path / "shortest.py"
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("ponder.strategies.shortest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    strategy = module.STRATEGY
    assert strategy.name == "shortest" and strategy.kind == "select" and not strategy.stats
    samples = [
        make_sample(0, "The answer is 12.", [-1.0] * 5),
        make_sample(1, "It is 12.", [-1.0] * 3),
        make_sample(2, "No idea.", [-1.0] * 2),
    ]
    d = strategy.decide(samples, SelectOptions(answer=AnswerSpec("number")))
    assert d.chosen == 1 and d.answer == "12"


def module_graph() -> dict[str, set[str]]:
    """Module -> the Ponder modules it imports (lazy imports included), inside one package:
    `from . import x` counts as importing submodule x; importing a package counts as
    importing its __init__."""
    graph: dict[str, set[str]] = {}
    modules = {_module(p)[0] for p in SERVER.rglob("*.py")}
    for path in SERVER.rglob("*.py"):
        module, package = _module(path)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package):
                while target and target not in modules:  # `ponder.x.name` -> `ponder.x`
                    target = target.rpartition(".")[0]
                if target and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among modules of the same package (a package's __init__ importing its
    own submodules is the normal direction and is left out)."""

    def same_package(a: str, b: str) -> bool:
        return a.rpartition(".")[0] == b.rpartition(".")[0] and a != b

    edges = {m: {t for t in ts if same_package(m, t)} for m, ts in graph.items()}
    cycles, state = [], dict.fromkeys(edges, 0)

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif state.get(nxt, 0) == 0:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if state[start] == 0:
            visit(start, [start])
    return cycles


def test_no_import_cycles_inside_a_package() -> None:
    """Issue 24 item 8: strategies/adaptive.py and strategy.py imported each other (one lazily);
    moving the lazy import to the top broke `import ponder.strategies`. The shared types now
    live in a leaf (strategies/job.py), and any cycle, lazy imports included, fails here."""
    cycles = find_cycles(module_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_lazy_cycle() -> None:
    graph = {"ponder.s.a": {"ponder.s.b"}, "ponder.s.b": {"ponder.s.a"}, "ponder.s.c": set()}
    assert find_cycles(graph) == [["ponder.s.a", "ponder.s.b", "ponder.s.a"]]
