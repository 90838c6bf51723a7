"""The house rules that code review alone would let slip: what CI runs."""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT

TOOLS = ("ruff", "mypy", "python")


def _fake_venv(tmp_path: Path, codes: dict[str, int]) -> tuple[Path, Path]:
    """A VENV whose install is taken as done and whose tools log their call and exit as `codes` says."""
    venv, log = tmp_path / "venv", tmp_path / "calls.log"
    (venv / "bin").mkdir(parents=True)
    digest = hashlib.sha1((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    (venv / f".installed-{digest}").touch()  # the Makefile's stamp: `make setup` has nothing to do
    for tool in TOOLS:
        script = venv / "bin" / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexit {codes.get(tool, 0)}\n')
        script.chmod(0o755)
    return venv, log


def _ci(tmp_path: Path, **codes: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    venv, log = _fake_venv(tmp_path, codes)
    done = subprocess.run([str(ROOT / ".ci" / "run")], env={"PATH": "/usr/bin:/bin", "VENV": str(venv)},
                          capture_output=True, text=True, timeout=60)
    return done, log.read_text().splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_ci_runs_ruff_mypy_and_every_test_and_passes_only_if_all_pass(tmp_path: Path) -> None:
    done, calls = _ci(tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls == ["ruff check .", "mypy ", "python -m pytest -q"]  # no -m: slow tests included


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(("tool", "code"), [("ruff", 1), ("mypy", 1), ("python", 1), ("python", 5)])
def test_ci_fails_on_any_failure_including_no_tests_collected(tmp_path: Path, tool: str, code: int) -> None:
    done, calls = _ci(tmp_path, **{tool: code})
    assert done.returncode == 1
    assert len(calls) == 3  # the other checks still ran
    assert done.stderr.strip().startswith("CI failed: ")
    assert {"ruff": "ruff", "mypy": "mypy", "python": f"pytest (exit {code})"}[tool] in done.stderr


# --- the import graph ------------------------------------------------------------------------------------

LAYERS = ("builder.lang", "builder.model", "training", "builder.tools")  # each imports only those before it


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports anywhere in it (inside functions too: a lazy import
    closes a cycle as surely as a top-level one), less those only a type checker sees."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    return found & modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for top in ("builder", "training") for p in (ROOT / top).rglob("*.py")}
    return {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}


def _layer(module: str) -> int:
    """0..3 as LAYERS; the package root (the Python API) and __main__ sit on top."""
    return next((i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")),
                len(LAYERS))


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n))), None)


def test_the_modules_import_no_cycle() -> None:
    graph = _graph()
    assert len(graph) > 50 and "builder.tools.cli" in graph["builder.__main__"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_each_layer_imports_only_the_layers_below_it() -> None:
    upward = sorted(f"{a} imports {b}" for a, targets in _graph().items() for b in targets if _layer(b) > _layer(a))
    assert upward == []


def test_the_cycle_and_layer_checks_catch_what_they_look_for() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert _layer("builder.lang.schema") < _layer("builder.model.build") < _layer("training.cli")
    assert _layer("training") < _layer("builder.tools.sweep") < _layer("builder")
