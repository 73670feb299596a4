"""The package's layers point one way: storage -> runs -> functional -> simulators -> attribution -> evaluation.

Every ``import`` of a simflib module anywhere in a module (top level or inside a function) is an edge; the test
fails on a cycle or on an edge from a lower layer to a higher one, naming it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import simflib

PACKAGE = Path(simflib.__file__).parent

LAYERS: list[set[str]] = [
    {"simflib._validation", "simflib.storage"},
    {"simflib.runs"},
    {"simflib.functional", "simflib.functional.linear", "simflib.functional.metrics", "simflib.functional.dynamics"},
    {"simflib.curriculum", "simflib.synthetic"},
    {"simflib.simulators", "simflib.simulators.base", "simflib.simulators.linear", "simflib.simulators.mean_trajectory",
     "simflib.simulators.dynamics", "simflib.simulators.features", "simflib.simulators.gptfluence",
     "simflib.simulators.metric"},
    {"simflib.tasks", "simflib.models", "simflib.gradients", "simflib.scoring", "simflib.executors"},
    {"simflib.baselines", "simflib.influence", "simflib.collect", "simflib.callback", "simflib.tracin",
     "simflib.features"},
    {"simflib.metrics", "simflib.experiments", "simflib.report"},
    {"simflib", "simflib.book", "simflib.bookcache", "simflib._launch", "simflib.__main__"},
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _edges() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def test_every_module_has_a_layer():
    placed = set().union(*LAYERS)
    assert set(_modules()) == placed, f"unplaced: {set(_modules()) - placed}; gone: {placed - set(_modules())}"


def test_imports_point_down_the_layers():
    level = {name: k for k, layer in enumerate(LAYERS) for name in layer}
    upward = [f"{a} -> {b}" for a, targets in _edges().items() for b in targets
              if level[b] > level[a] and not (a == "simflib.simulators" or b.startswith(a + "."))]
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_no_import_cycle():
    edges = _edges()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [])


def test_importing_simflib_needs_no_torch():
    code = "import sys, simflib; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
