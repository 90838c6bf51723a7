"""The house rules that code review alone would let slip: what CI runs."""

from __future__ import annotations

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
