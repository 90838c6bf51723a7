"""`make demo` from the repository root, with a tiny budget: it runs end to end and leaves no untracked file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _untracked() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return {line[3:] for line in out.splitlines() if line.startswith("??")}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / ".git").exists(), reason="needs make and a checkout")
def test_make_demo_trains_and_leaves_no_untracked_files(tmp_path: Path) -> None:
    before = _untracked()
    run_dir = tmp_path / "demo"
    # STAMP names an existing file so the set-up step (CI runs it) is taken as done,
    # and VENV is the environment running these tests.
    done = subprocess.run(
        ["make", "demo", f"VENV={Path(sys.executable).parent.parent}", "STAMP=pyproject.toml",
         f"ARGS=--epochs 1 --out {run_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "demo done" in done.stdout
    assert {"summary.txt", "metrics.csv", "curves.png", "model.safetensors"} <= {p.name for p in run_dir.iterdir()}
    assert (ROOT / "runs" / "alexnet_digits.png").is_file()
    assert _untracked() == before
