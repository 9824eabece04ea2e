"""Imports run one way (DESIGN.md): core is the ground floor, and what ships to the robot needs only core.

Every import statement is read from the source, those inside functions included, so a lazy import
cannot hide an arrow that runs the wrong way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def physai_imports(path: Path) -> set[str]:
    """The physai modules a source file imports, anywhere in it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "physai"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "physai":
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def outside(path: Path, allowed: tuple[str, ...]) -> list[str]:
    """The imports of ``path`` that are neither an allowed package nor physai's version string."""
    return sorted(name for name in physai_imports(path)
                  if name != "physai.__version__" and not any(name == a or name.startswith(a + ".") for a in allowed)
                  and not any(a.startswith(name + ".") for a in allowed))


@pytest.mark.parametrize("folder, allowed", [
    ("physai/core", ("physai.core",)),
    ("physai/edge", ("physai.core", "physai.edge")),
])
def test_a_layer_imports_only_what_lies_below_it(folder, allowed):
    wrong = {str(path.relative_to(REPO)): outside(path, allowed) for path in sorted((REPO / folder).glob("*.py"))}
    assert {path: names for path, names in wrong.items() if names} == {}


# DESIGN.md's layers, lowest first: a module may import its own package and any lower layer.
LAYERS = {"core": 0, "envs": 1, "synthetic": 1, "edge": 1, "config": 2, "train": 3, "deploy": 3, "report": 3,
          "stages": 4, "run": 5, "bench": 5}
SOURCE_ROOTS = {"envs": "envs", "synthetic": "synthetic", **{name: f"physai/{name}" for name in LAYERS
                                                            if name not in ("envs", "synthetic")}}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "physai" and parts[1] in LAYERS else None


def test_every_physai_module_lives_in_a_layer():
    loose = sorted(p.name for p in (REPO / "physai").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside the layers of DESIGN.md: {loose}"


def test_no_import_runs_up_a_layer():
    upward = []
    for package, folder in SOURCE_ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            for name in physai_imports(path):
                target = _package(name)
                if target and target != package and LAYERS[target] > LAYERS[package]:
                    upward.append(f"{path.relative_to(REPO)} imports {name}")
    assert upward == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import numpy\nfrom physai.core.errors import ConfigError\n\n"
                      "def late():\n    from physai.pipeline import build_task\n    import physai.envs.vector\n")
    assert outside(source, ("physai.core",)) == ["physai.envs.vector", "physai.pipeline", "physai.pipeline.build_task"]


def _module_files() -> dict[str, Path]:
    """Dotted name -> file, for every module physai installs (envs and synthetic under physai.)."""
    modules = {}
    for prefix, folder in (("physai.envs", "envs"), ("physai.synthetic", "synthetic"), ("physai", "physai"),
                           ("hydra_plugins", "hydra_plugins")):
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            name = ".".join([prefix, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            modules.setdefault(name, path)
    return modules


def test_no_module_imports_itself_back_through_others():
    modules = _module_files()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
        # A package's __init__ importing its own children is not a cycle.
        graph[name] = {t for t in targets if t and t != name and not t.startswith(name + ".")}

    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (name -> names it imports) as a path back to its start, or None."""
    for start in sorted(graph):
        path, seen = [start], set()

        def walk(node: str) -> list[str] | None:
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return path + [start]
                if nxt not in seen:
                    seen.add(nxt)
                    path.append(nxt)
                    found = walk(nxt)
                    if found:
                        return found
                    path.pop()
            return None

        found = walk(start)
        if found:
            return found
    return None


def test_the_cycle_check_finds_a_cycle_through_other_modules():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


# An import of physai's own modules sits at the top of its module, where the import graph shows it. The few left
# inside a function, each with its reason; a key is a file, or "file::function" for one function of it.
LAZY_INTERNAL_IMPORTS = {
    # A dispatcher: each subcommand (and route_env_id's env registry) is imported when it runs, so `physai --help`,
    # `physai verify` and `physai data info` load no trainer, torch, Hydra or simulator.
    "physai/run/cli.py": "subcommand dispatch",
    # torch eager is an optional contender (left out where torch or the run's checkpoint is missing);
    # onnx_export and train.sb3 import torch, which the edge benchmark must not load without it.
    "physai/bench/edge.py::_torch_contender": "optional torch contender",
}
SCANNED = ("physai", "envs", "synthetic", "hydra_plugins", "train.py")
INTERNAL_ROOTS = ("physai", "envs", "synthetic")


def lazy_internal_imports(path: Path) -> list[tuple[str, int, str]]:
    """(function, line, name) for every name of physai's own modules imported inside a function of ``path``.

    Own modules: ``physai.*``, the source folders' names (``envs``, ``synthetic``) and relative imports.
    ``function`` is the qualified name of the innermost enclosing function (``Class.method``, ``outer.inner``);
    ``name`` is dotted, ``from physai.run import sweeps`` giving ``physai.run.sweeps``.
    """
    found = []

    def visit(node: ast.AST, scope: list[str], in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, [*scope, child.name], in_function or not isinstance(child, ast.ClassDef))
                continue
            if in_function and isinstance(child, ast.ImportFrom):
                module = "." * child.level + (child.module or "")
                if child.level or module.split(".")[0] in INTERNAL_ROOTS:
                    prefix = module if module.endswith(".") else module + "."
                    found.extend((".".join(scope), child.lineno, prefix + alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.Import):
                found.extend((".".join(scope), child.lineno, alias.name) for alias in child.names
                             if alias.name.split(".")[0] in INTERNAL_ROOTS)
            visit(child, scope, in_function)

    visit(ast.parse(path.read_text(), filename=str(path)), [], False)
    return found


def _scanned_files() -> list[Path]:
    return sorted(path for name in SCANNED
                  for path in ([REPO / name] if name.endswith(".py") else (REPO / name).rglob("*.py")))


def test_imports_of_physai_modules_sit_at_the_top_of_their_module():
    unlisted, used = [], set()
    for path in _scanned_files():
        rel = str(path.relative_to(REPO))
        for function, line, module in lazy_internal_imports(path):
            key = next((k for k in (f"{rel}::{function}", rel) if k in LAZY_INTERNAL_IMPORTS), None)
            if key is None:
                unlisted.append(f"{rel}:{line} imports {module} inside {function}()")
            used.add(key)
    assert not unlisted, ("move these imports to the top of their module, or, where that would make a cycle or "
                          "load torch/SB3/matplotlib/onnx on a path that must stay light, list the file or function "
                          "in LAZY_INTERNAL_IMPORTS with the reason:\n" + "\n".join(unlisted))
    assert set(LAZY_INTERNAL_IMPORTS) <= used, f"stale entries: {sorted(set(LAZY_INTERNAL_IMPORTS) - used)}"


def test_the_lazy_import_check_sees_every_kind_of_own_import(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import numpy\nimport physai.core\nfrom physai.core.errors import ConfigError\n\n"
                      "def late():\n    import json\n    from physai.envs import mdp\n\n"
                      "    def inner():\n        import physai.edge, numpy\n\n"
                      "class Model:\n    from physai.core import io\n\n"
                      "    def load(self):\n        from .spec import build_spec\n        from synthetic import x\n")
    assert lazy_internal_imports(source) == [("late", 7, "physai.envs.mdp"), ("late.inner", 10, "physai.edge"),
                                             ("Model.load", 16, ".spec.build_spec"), ("Model.load", 17, "synthetic.x")]


def test_the_simulator_loads_without_torch_or_stable_baselines3():
    probe = ("import sys, physai.envs, physai.envs.vector, physai.envs.gym_task, physai.envs.engine; "
             "print(sorted(m for m in ('torch', 'stable_baselines3') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
