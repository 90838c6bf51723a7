"""The command line: exit codes, one-line messages, no traceback, no torch for validate."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, SPECS, TINY_SPEC

from builder.tools import cli as cli_module


def test_validate_prints_one_ok_line(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = cli("validate", SPECS / "alexnet.yaml")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{SPECS / 'alexnet.yaml'}: OK: alexnet, 5 blocks, output 256x6x6, flatten 9216, 58,322,314 parameters"
    ]


def test_validate_checks_the_training_section_too(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = cli("validate", SPECS / "alexnet_digits.yaml", "--set", "training.epochs=0",
                       "--set", "blocks[0].stride=0")
    assert code == 2
    assert err.splitlines() == [
        "--set blocks[0].stride=0: error: blocks[0].stride: must be > 0, got 0",
        "--set training.epochs=0: error: training.epochs: must be > 0, got 0",
    ]


def test_validate_never_imports_torch() -> None:
    code = (
        "import sys; from builder.tools.cli import main; rc = main(['validate', sys.argv[1]]); "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchvision', 'torchinfo'))); "
        "print(bad); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(SPECS / "alexnet.yaml")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_python_dash_m_bad_spec_exit_2_without_traceback(write_spec: Callable[..., Path]) -> None:
    path = write_spec("name: x\ninput: {channels: 3, height: 8, width: 8}\nnum_classes: 2\nblocks:\n"
                      "  - {out_channels: 4, kernel_size: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "validate", str(path)], capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"{path}:5:36: error: blocks[0].kernel_size: must be > 0, got 0\n"


@pytest.mark.parametrize("command", ["validate", "summarize"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("", "file is empty"),
        ("- a\n", "top level must be a mapping"),
        ("a: [\n", "invalid YAML"),
        ("a: !!python/object/apply:os.system [echo]\n", "not allowed"),
    ],
)
def test_bad_files_exit_2_one_line(
    cli: Callable[..., tuple[int, str, str]], tmp_path: Path, command: str, content: str | None, message: str
) -> None:
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content)
    code, out, err = cli(command, path)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"{path}:") and message in err


def test_directory_and_binary(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    assert cli("validate", tmp_path)[0] == 2
    (tmp_path / "b.yaml").write_bytes(b"\x89PNG\x00\x00")
    code, _, err = cli("validate", tmp_path / "b.yaml")
    assert code == 2 and "binary file" in err


def test_too_large_for_memory_on_cpu_but_fine_on_meta(cli: Callable[..., tuple[int, str, str]]) -> None:
    huge = ["--set", "classifier.hidden=[2000000, 4096]"]
    code, _, err = cli("summarize", SPECS / "alexnet.yaml", *huge, "--device", "cpu")
    assert code == 2
    assert err.startswith("error: alexnet: 26,") and "meta device" in err
    assert cli("summarize", SPECS / "alexnet.yaml", *huge, "--depth", "0")[0] == 0


def test_usage_errors_exit_2(cli: Callable[..., tuple[int, str, str]]) -> None:
    with pytest.raises(SystemExit) as info:
        cli("frobnicate")
    assert info.value.code == 2


def test_draw_refuses_more_blocks_than_it_accepts(
    cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch, write_spec: Callable[..., Path],
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(cli_module, "MAX_DRAW_BLOCKS", 2)  # the real limit, 200, takes seconds to draw
    path = write_spec(TINY_SPEC)
    assert cli("draw", path, "-o", tmp_path / "two.svg")[0] == 0  # at the limit
    more = "blocks=[" + ", ".join(["{out_channels: 4, kernel_size: 1}"] * 3) + "]"
    code, _, err = cli("draw", path, "--set", more, "-o", tmp_path / "three.svg")
    assert (code, err) == (2, f"{path}: error: blocks: 3 blocks; draw accepts at most 2 (use `summarize` instead)\n")
    assert not (tmp_path / "three.svg").exists()


def test_a_huge_lrn_size_does_not_hang_summarize(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = cli("summarize", "alexnet", "--set", "defaults.norm.size=1000000000000", "--depth", "1")
    assert code == 0 and "shape check: 5 blocks" in out  # before: hours of a Python loop over the window


def test_every_command_has_an_example_and_every_option_a_help_line() -> None:
    from builder.tools.cli import EXAMPLES, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) <= set(EXAMPLES)
    for name, command in sub.choices.items():
        assert command.format_help().rstrip().endswith(EXAMPLES[name]), name
        silent = [a.dest for a in command._actions if a.help in (None, "") and a.dest != "help"]
        assert silent == [], f"{name}: options without help: {silent}"


def test_validate_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    for spec, code in ((str(SPECS / "lenet5.yaml"), 0), (str(bad), 2)):
        assert gc.isenabled()
        assert cli_module.main(["validate", spec]) == code
    assert gc.isenabled()
    gc.disable()
    try:
        assert cli_module.main(["validate", str(SPECS / "lenet5.yaml")]) == 0
        assert not gc.isenabled()  # paused by the caller: left paused
    finally:
        gc.enable()


@pytest.mark.parametrize(("args", "message"), [
    (("summarize", "lenet5", "--device", "foo"),
     "error: unknown device 'foo'; expected auto, cpu, cuda, cuda:N or mps"),
    (("draw", "lenet5", "-o", "/dev/null/x.png"), "error: -o /dev/null/x.png: /dev/null is not a directory"),
])
def test_impossible_device_or_output_is_one_line(
    args: tuple[str, ...], message: str, cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = cli(*args)
    assert code == 2 and err.startswith(message) and len(err.strip().splitlines()) == 1


def test_an_absent_device_is_one_line(cli: Callable[..., tuple[int, str, str]]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("summarize", "lenet5", "--device", "cuda")
    assert code == 2 and err.strip() == "error: cuda is not available here; use auto or cpu"


def test_an_unforeseen_exception_is_one_line_and_its_traceback_on_request(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from builder.tools import cli as cli_module

    def boom(args: object) -> int:
        raise RuntimeError("value cannot be converted")

    monkeypatch.setattr(cli_module, "cmd_validate", boom)
    monkeypatch.delenv(cli_module.DEBUG_ENV, raising=False)
    assert cli_module.main(["validate", "lenet5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: value cannot be converted" in err and "Traceback" not in err
    monkeypatch.setenv(cli_module.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError):
        cli_module.main(["validate", "lenet5"])
