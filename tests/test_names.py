"""Shipped specs by name (issue 15): lookup on the command line, in `extends:` and the API; `list`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, SPECS, TINY_SPEC

from builder.lang import loading
from builder.lang.errors import SpecError
from builder.lang.loading import find_spec, load_spec, shipped_specs
from builder.lang.shapes import infer

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory outside the repository."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in folder of shipped specs, with subfolders."""
    root = tmp_path / "shipped"
    for rel in ("tiny.yaml", "a/twin.yaml", "b/twin.yaml", "deep/er/only.yaml", ".cache/tiny.yaml", "a/.twin.yaml"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(TINY_SPEC.replace("name: tiny", f"name: {Path(rel).stem}"))
    (root / "spec.schema.json").write_text("{}")
    monkeypatch.setattr(loading, "shipped_dir", lambda: root)
    return root


@pytest.mark.parametrize("name", ["alexnet.yaml", "alexnet"])
def test_a_shipped_name_works_outside_the_repository(cli: Cli, outside: Path, name: str) -> None:
    code, out, err = cli("validate", name)
    assert (code, err) == (0, "")
    assert out.startswith(f"{SPECS / 'alexnet.yaml'}: OK: alexnet, 5 blocks")  # names the file read


def test_from_the_repository_root_the_message_shows_the_short_path(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, _ = cli("resolve", "alexnet_bn", "--set", "num_classes=3")
    assert code == 0 and "name: alexnet_bn" in out and "num_classes: 3" in out
    code, _, err = cli("validate", "alexnet.yaml", "--set", "blocks[0].stride=99")
    assert code == 2 and err.startswith("arch_specs/alexnet.yaml:")


def test_an_existing_path_wins_over_a_shipped_name(cli: Cli, outside: Path) -> None:
    (outside / "alexnet.yaml").write_text(TINY_SPEC)
    code, out, _ = cli("validate", "alexnet.yaml")
    assert code == 0 and out.startswith("alexnet.yaml: OK: tiny,")


def test_user_specs_extend_a_shipped_spec_by_name(cli: Cli, outside: Path) -> None:
    (outside / "mine").mkdir()
    (outside / "mine" / "base.yaml").write_text("extends: alexnet\nname: mybase\nnum_classes: 7\n")
    (outside / "mine" / "child.yaml").write_text("extends: base.yaml\nname: child\nwidth: 0.5\n")  # own relative path
    spec = load_spec("mine/child.yaml")
    assert (spec.name, spec.num_classes, spec.blocks[0].out_channels) == ("child", 7, 48)
    code, out, _ = cli("validate", "mine/child.yaml")
    assert code == 0 and out.startswith("mine/child.yaml: OK: child")


def test_a_variant_that_breaks_a_shipped_base_names_itself(outside: Path) -> None:
    (outside / "small.yaml").write_text("extends: alexnet\nname: small\ninput: {channels: 3, height: 64, width: 64}\n")
    with pytest.raises(SpecError) as info:
        load_spec("small.yaml")
    line = str(info.value.diagnostics[0])
    assert line.startswith(str(SPECS / "alexnet.yaml")) and "spatial size collapses" in line
    assert line.endswith("; input is set at small.yaml:3:8")


def test_a_misspelt_name_suggests_a_shipped_one(cli: Cli, outside: Path) -> None:
    code, _, err = cli("summarize", "alexnt.yaml")
    assert code == 2
    assert err == ("alexnt.yaml:1:1: error: no such file, and no shipped spec has that name; "
                   "did you mean 'alexnet.yaml'?\n")
    (outside / "v.yaml").write_text("name: v\nextends: alexnet_bm\n")
    code, _, err = cli("validate", "v.yaml")
    assert err.startswith("v.yaml:2:10: error: extends: base spec 'alexnet_bm' not found (looked for alexnet_bm)")
    assert err.rstrip().endswith("did you mean 'alexnet_bn.yaml'?") and code == 2


def test_an_ambiguous_name_lists_the_candidates(shipped: Path, outside: Path, cli: Cli) -> None:
    code, _, err = cli("validate", "twin")
    assert code == 2
    assert err == ("twin:1:1: error: 'twin' names 2 shipped specs: a/twin.yaml, b/twin.yaml; "
                   "give one of these paths instead\n")
    assert load_spec("b/twin").name == "twin"
    assert find_spec("only") == shipped / "deep/er/only.yaml"  # any depth below the folder
    assert find_spec("deep/er/only.yaml") == shipped / "deep/er/only.yaml"


def test_only_relative_names_are_looked_up(shipped: Path, outside: Path) -> None:
    for ref in ("/tiny.yaml", "./tiny.yaml", "../tiny.yaml", "spec.schema.json"):
        with pytest.raises(SpecError, match="no such file"):
            find_spec(ref)


def test_list_shows_every_shipped_spec_statically(cli: Cli, shipped: Path, outside: Path) -> None:
    code, out, err = cli("list")
    lines = out.splitlines()
    assert (code, err) == (0, "") and lines[0].split()[:4] == ["spec", "name", "input", "classes"]
    assert [line.split()[0] for line in lines[1:]] == ["a/twin.yaml", "b/twin.yaml", "deep/er/only.yaml", "tiny.yaml"]
    report = infer(load_spec(shipped / "tiny.yaml"))
    cells = lines[-1].split()
    assert cells[1:5] == ["tiny", "3x16x16", "4", f"{report.total_params:,}"]
    assert cells[5:7] == [f"{report.mult_adds / 1e6:.3f}", "M"] and cells[7] == str(shipped / "tiny.yaml")  # < 0.01 G


def test_list_reports_a_broken_shipped_spec(cli: Cli, shipped: Path) -> None:
    (shipped / "broken.yaml").write_text("name: broken\n")
    code, out, err = cli("list")
    assert code == 2 and "tiny.yaml" in out
    assert err.startswith(f"{shipped / 'broken.yaml'}:1:1: error: input: required field is missing")


@pytest.mark.slow
def test_list_of_the_real_specs_never_imports_torch(tmp_path: Path) -> None:
    code = "import sys; from builder.tools.cli import main; main(['list']); assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(shipped_specs()) + 1
    row = next(line.split() for line in out.stdout.splitlines() if line.startswith("alexnet_torchvision.yaml"))
    assert row[:6] == ["alexnet_torchvision.yaml", "alexnet_torchvision", "3x224x224", "1000", "61,100,840", "0.714"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_spec(""), "'':1:1: error: the spec path is empty"),
        (lambda: load_spec("a\0b"), "error: the spec path contains a NUL character"),
        (lambda: load_spec("x" * 5000), "error: the spec path is longer than 4096 characters"),
        (lambda: load_spec(3), "load_spec: error: a spec path must be a str or a path, got int"),
        (lambda: load_spec("alexnet", "num_classes=3"),  # type: ignore[arg-type]
         "load_spec: error: overrides: must be a list of PATH=VALUE strings, not one string (write ['num_classes=3'])"),
        (lambda: load_spec("alexnet", [3]),  # type: ignore[list-item]
         "load_spec: error: overrides: must be a list of PATH=VALUE strings, got [3]"),
    ],
)
def test_the_python_api_checks_its_arguments(outside: Path, call: Callable[[], object], message: str) -> None:
    with pytest.raises(SpecError) as info:
        call()
    assert len(info.value.diagnostics) == 1 and message in str(info.value)
