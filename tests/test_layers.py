"""The import graph: layers only import downward, and no files or packages import in a circle.

The layers, bottom up: the base (tally/: settings, errors, connections, the
key scheme, the event schema), the counting core, the services on it (the
API, the flusher and its sinks, the exporter, the migrations), the HTTP
server of the API, the local stack with the CLI, and apart on top the Python
client, which imports nothing else of Tally. A module's layer
is its longest matching prefix in LAYERS.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGE_DIRS: dict[str, str] = PYPROJECT["package-dir"]
LAYERS = {
    "tally": 0,
    "tally.ingest.counting": 1,
    "tally.ingest.api": 2, "tally.ingest.flusher": 2, "tally.ingest.statsd": 2,
    "tally.exporter": 2, "tally.timescale": 2,
    # The batch layer: on the flusher's sinks, below nothing of the services that read it.
    "tally.ingest.batch": 2,
    "tally.ingest": 3,  # serve.py and worker.py: the HTTP server over the API
    "tally.stack": 4,
    "tally.client": 5,  # the Python client: its own top layer, on nothing of the server
}


def modules() -> dict[str, Path]:
    """Every installed module by its dotted name, found through pyproject's package-dir."""
    found = {}
    for package in PYPROJECT["packages"]:
        base = next(p for p in sorted(PACKAGE_DIRS, key=len, reverse=True)
                    if package == p or package.startswith(p + "."))
        folder = ROOT / PACKAGE_DIRS[base] / Path(*package[len(base):].split(".")[1:])
        for path in folder.glob("*.py"):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


MODULES = modules()


def imports(path: Path) -> set[str]:
    """Names of Tally modules a file imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import submodule` depends on the submodule, not on the
            # package's __init__ (which may itself import its submodules).
            names.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}"
                         in MODULES else node.module for alias in node.names)
    return {owner(name) for name in names if owner(name)}


def owner(name: str) -> str | None:
    """The module an imported name lives in (a name may be a module or one of its members)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def layer(module: str) -> tuple[int, str]:
    """(layer, package prefix) of a module."""
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix], prefix


def package(module: str) -> str:
    """The package a module belongs to (a package belongs to itself)."""
    return module if MODULES[module].stem == "__init__" else module.rpartition(".")[0]


GRAPH = {module: imports(path) - {module} for module, path in MODULES.items()}


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of a graph as [a, b, ..., a], or [] when there is none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_every_package_folder_is_installed():
    """A folder with an __init__.py that pyproject does not list would be missing from the wheel."""
    listed = {MODULES[p] for p in PYPROJECT["packages"]}
    on_disk = {p for d in PACKAGE_DIRS.values() for p in (ROOT / d).rglob("__init__.py")}
    assert on_disk - listed == set()


def test_imports_only_go_down_a_layer_or_stay_in_their_package():
    upward = [f"{m} ({layer(m)[0]}) imports {i} ({layer(i)[0]})" for m, deps in GRAPH.items()
              for i in deps if layer(i)[0] > layer(m)[0]]
    assert upward == []


def test_no_two_files_import_each_other_even_through_others():
    assert cycle(GRAPH) == []


def test_no_two_packages_import_each_other_even_through_others():
    packages: dict[str, set[str]] = {}
    for module, deps in GRAPH.items():
        packages.setdefault(package(module), set()).update(
            package(d) for d in deps if package(d) != package(module))
    assert cycle(packages) == []


@pytest.mark.parametrize("name", ["ingest", "exporter", "stack", "timescale", "client"])
def test_nothing_imports_a_folder_by_its_uninstalled_name(name):
    """`import ingest` works from the checkout only; installed, the package is tally.ingest."""
    users = [str(path.relative_to(ROOT)) for path in ROOT.glob("[!.]*/**/*.py")
             if ".venv" not in path.parts and any(
                 (isinstance(n, ast.Import) and any(a.name.split(".")[0] == name for a in n.names))
                 or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == name)
                 for n in ast.walk(ast.parse(path.read_text())))]
    assert users == []


def test_the_client_stands_alone():
    """tally.client runs in an application with only the standard library and requests."""
    client = {m for m in MODULES if layer(m)[1] == "tally.client"}
    outside = {f"{m} imports {i}" for m in client for i in GRAPH[m] if i not in client}
    users = {f"{m} imports {i}" for m in set(MODULES) - client for i in GRAPH[m] & client}
    third_party = {f"{m} imports {name}" for m in client for name in top_level_imports(MODULES[m])
                   if name not in sys.stdlib_module_names and name not in ("tally", "requests")}
    assert (outside, users, third_party) == (set(), set(), set())


def top_level_imports(path: Path) -> set[str]:
    """First components of every name a file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names
