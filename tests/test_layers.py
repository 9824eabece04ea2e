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


def test_the_simulator_loads_without_torch_or_stable_baselines3():
    probe = ("import sys, physai.envs, physai.envs.vector, physai.envs.gym_task, physai.envs.engine; "
             "print(sorted(m for m in ('torch', 'stable_baselines3') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
