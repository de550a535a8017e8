"""The import rules of docs/architecture.md, checked on the source: a forbidden import (a
layer reaching up, or sideways where the doc says it must not) fails here by name."""

from __future__ import annotations

import ast
import json
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
    "verifiers": set(),
    "tracing": {"types"},
    # domain
    "strategies": {"types", "errors", "answers", "stops", "verifiers"},
    "engines": {"types", "errors", "stops", "config"},
    "runner": {"types", "errors", "strategies", "metrics", "calibration", "tracing"},
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
        "verifiers",
        "tracing",
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


ADD_SHORTEST = r"""
import json
from pydantic import ValidationError
from ponder.answers import AnswerSpec
from ponder.api.errors import ApiError
from ponder.api.aliases import parse_model
from ponder.api.plan import check_request
from ponder.api.schemas import ChatCompletionRequest
from ponder.config import Settings
from ponder.eval.records import Candidate, ProblemRecord
from ponder.eval.runner import evaluate
from ponder.strategies import REGISTRY, SelectOptions
from ponder.strategies.shortest import ShortestOptions
from ponder.types import Sample
import numpy as np

def request(ponder):
    return ChatCompletionRequest.model_validate(
        {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], "ponder": ponder}
    )

out = {}
out["alias"] = list(parse_model("smollm2+shortest@4", "smollm2"))
props = ChatCompletionRequest.model_json_schema()["$defs"]["PonderOptions"]["properties"]
out["schema"] = "shortest" in props
checked = check_request(request({"strategy": "shortest", "shortest": {"min_tokens": 3}}),
                        Settings(), "smollm2")
out["min_tokens"] = checked.options.of(ShortestOptions).min_tokens
try:
    request({"strategy": "shortest", "shortest": {"min_tokens": -1}})
except ValidationError as e:
    out["bound"] = list(e.errors()[0]["loc"])
try:
    check_request(request({"strategy": "majority_vote", "shortest": {"min_tokens": 3}}),
                  Settings(), "smollm2")
except ApiError as e:
    out["refused"] = e.param
def sample(i, text, n):
    lp = np.full(n, -1.0, np.float32)
    zero = np.zeros(n, np.float32)
    return Sample(i, text, list(range(n)), "stop", lp, lp.copy(), lp.copy(), zero)
samples = [sample(0, "It is 12.", 2), sample(1, "The answer is 13.", 5), sample(2, "So 14.", 9)]
d = REGISTRY["shortest"].decide(samples, checked.options)
out["decided"] = [d.chosen, d.answer]
cands = [Candidate(s.text, s.n_tokens) for s in samples]
record = ProblemRecord("p", "13", "number", {"sampling": cands})
out["eval"] = sorted(evaluate(record, ["shortest"], [1, 3], count=2, seed=0)["shortest"])
print(json.dumps(out))
"""


def test_the_docs_worked_strategy_example_is_one_module_and_one_registry_line(
    tmp_path: Path,
) -> None:
    """docs/architecture.md's "shortest answer" module, added to a copy of the package as the
    doc says (the module + the registry line, nothing else), is requested by alias, has its
    options block in the request schema with the model's bounds, is refused with another
    strategy, decides with its option, and is evaluated by `ponder eval`'s runner."""
    import re
    import shutil
    import subprocess
    import sys

    doc = (SERVER.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    module, registry = re.findall(r"```python\n(.*?)```", doc, re.S)[:2]
    assert "shortest.STRATEGY," in registry
    copy = tmp_path / "ponder"
    shutil.copytree(SERVER, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "strategies" / "shortest.py").write_text(module, encoding="utf-8")
    init = copy / "strategies" / "__init__.py"
    text = init.read_text(encoding="utf-8")
    text = text.replace("from . import ", "from . import shortest\nfrom . import ", 1)
    text = text.replace("\n)\n\nREGISTRY", "\n    shortest.STRATEGY,\n)\n\nREGISTRY", 1)
    assert "shortest.STRATEGY" in text
    init.write_text(text, encoding="utf-8")
    run = subprocess.run(
        [sys.executable, "-c", ADD_SHORTEST],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["alias"] == ["shortest", 4, None] and out["schema"] and out["min_tokens"] == 3
    assert out["bound"] == ["ponder", "shortest", "min_tokens"]
    assert out["refused"] == "ponder.shortest"
    assert out["decided"] == [1, "13"]  # 2 tokens < min_tokens 3: the next shortest
    assert out["eval"] == [1, 3]


def strategy_name_comparisons(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines comparing something with a strategy's name: a string literal that names a
    registered strategy, or a strategy module's `NAME`, in `==`, `!=`, `in` or `not in`
    (a tuple or set of names included)."""

    aliases = {  # `from .strategies.deepconf import NAME as DEEPCONF`
        a.asname or a.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for a in node.names
        if a.name == "NAME"
    }

    def names_a_strategy(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "NAME":
            return True
        if isinstance(node, ast.Name) and node.id in aliases:
            return True
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_a_strategy(e) for e in node.elts)
        return False

    lines = []
    for node in ast.walk(tree):
        compares = isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops
        )
        if compares and any(names_a_strategy(x) for x in [node.left, *node.comparators]):
            lines.append(node.lineno)
    return lines


def test_no_strategy_name_is_compared_outside_strategies() -> None:
    """What a strategy is and needs is asked of its object (kind, stats, options, sampling,
    variants), never decided by comparing its name: otherwise a new strategy would need edits
    wherever the name is tested (eval included)."""
    from ponder.strategies import STRATEGIES

    # "none" is also a value OpenAI's API defines (tool_choice, function_call): comparing a
    # field with it is no strategy check (the plain strategy is told by its kind, "plain")
    names = set(STRATEGIES) - {"none"}
    found = []
    for path in SERVER.rglob("*.py"):
        if path.is_relative_to(SERVER / "strategies"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{path.relative_to(SERVER)}:{n}" for n in strategy_name_comparisons(tree, names)]
    assert found == []


def test_the_name_check_sees_a_comparison() -> None:
    names = {"deepconf", "none"}
    tree = ast.parse(
        "from .d import NAME as D\nif s == 'deepconf': pass\nif x in ('none', 'y'): pass\n"
        "if s == d.NAME: pass\nif D in strategies: pass"
    )
    assert strategy_name_comparisons(tree, names) == [2, 3, 4, 5]
    assert strategy_name_comparisons(ast.parse("x = {'deepconf': 1}['deepconf']"), names) == []


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
