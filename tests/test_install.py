"""A non-editable install carries the shipped specs: `summarize alexnet.yaml` works from any directory.

The install reuses the running environment's packages (torch, pydantic, setuptools) through a
.pth line, and installs only the project itself (--no-deps, --no-build-isolation, --no-index):
a few seconds, no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, TINY_SPEC


def test_the_package_list_names_every_package_directory() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("builder", "training")
             for p in (ROOT / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == found | {"builder.arch_specs"}
    assert setuptools["package-dir"] == {"builder.arch_specs": "arch_specs"}


def _run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv with the project installed from a copy of the checkout (plus a new spec)."""
    pytest.importorskip("setuptools", reason="the offline build needs setuptools (in the dev extra)")
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("builder", "training", "arch_specs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "arch_specs" / "later" / "deeper").mkdir(parents=True)
    (src / "arch_specs" / "later" / "deeper" / "added_later.yaml").write_text(TINY_SPEC.replace("tiny", "added_later"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", tmp / "venv"], check=True)
    python = tmp / "venv" / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).stdout.strip()
    Path(site, "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., not `builder`
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    done = _run([*pip, "--ignore-installed", src], tmp)  # never touches the parent environment
    assert done.returncode == 0, done.stderr
    return python


@pytest.mark.slow
def test_installed_package_validates_and_summarizes_by_name_from_an_empty_directory(
    installed: Path, tmp_path: Path
) -> None:
    where = _run([installed, "-c", "import builder; print(builder.__file__)"], tmp_path).stdout
    assert where.startswith(str(installed.parents[2])), where  # the installed copy, not the checkout
    done = _run([installed, "-m", "builder", "validate", "alexnet.yaml"], tmp_path)
    assert done.returncode == 0 and "OK: alexnet, 5 blocks" in done.stdout, done.stderr
    assert done.stdout.startswith(str(installed.parents[2]))  # names the installed file it read
    done = _run([installed, "-m", "builder", "summarize", "alexnet.yaml"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alexnet: 58,322,314 parameters" in done.stdout and "shape check: 5 blocks" in done.stdout


@pytest.mark.slow
def test_the_installed_command_is_the_same_program(installed: Path, tmp_path: Path) -> None:
    command = installed.parent / "cnn-builder"
    done = _run([command, "validate", "alexnet.yaml"], tmp_path)
    assert done.returncode == 0 and "OK: alexnet, 5 blocks" in done.stdout, done.stderr
    (tmp_path / "bad.yaml").write_text("name: bad\n")
    done = _run([command, "validate", "bad.yaml"], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("bad.yaml:"), done.stderr


@pytest.mark.slow
def test_installed_package_ships_every_spec_and_the_schema(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("extends: added_later\nname: mine\nnum_classes: 9\n")
    done = _run([installed, "-m", "builder", "validate", "mine.yaml"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("mine.yaml: OK: mine"), done.stderr
    names = [line.split()[0] for line in _run([installed, "-m", "builder", "list"], tmp_path).stdout.splitlines()[1:]]
    shipped = sorted(p.relative_to(ROOT / "arch_specs").as_posix() for p in (ROOT / "arch_specs").rglob("*.yaml"))
    assert names == sorted([*shipped, "later/deeper/added_later.yaml"])
    code = "import builder.lang.loading as l; print((l.shipped_dir() / 'spec.schema.json').read_text())"
    schema = _run([installed, "-c", code], tmp_path).stdout
    assert schema.strip() == (ROOT / "arch_specs" / "spec.schema.json").read_text().strip()
