"""The summary: golden stable part, shape cross-check, auto device, meta device allocates nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SPECS

from builder.lang.errors import BuilderError
from builder.lang.loading import load_spec
from builder.model.summary import AUTO_MAX_PARAMS, summarize

GOLDEN = ROOT / "tests" / "golden" / "alexnet_summary.txt"


def stable_part(out: str) -> str:
    """The project's own part of `summarize`'s output: from the layer list's heading to the end."""
    start = out.index("\nlayers of ") + 1
    return out[start:]


def test_alexnet_summary_matches_golden(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = cli("summarize", SPECS / "alexnet.yaml")
    assert (code, err) == (0, "")
    assert "Total params: 58,322,314" in out  # torchinfo's table for people, not compared line by line
    assert stable_part(out) == GOLDEN.read_text()


def test_golden_survives_a_torchinfo_layout_change(
    cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchinfo.model_statistics import ModelStatistics

    monkeypatch.setattr(ModelStatistics, "__repr__", lambda self: "a table laid out some other way\n" * 3)
    code, out, _ = cli("summarize", SPECS / "alexnet.yaml")
    assert code == 0 and out.startswith("a table laid out some other way")
    assert stable_part(out) == GOLDEN.read_text()


def test_golden_catches_a_real_change_of_shapes_and_parameters(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = cli("summarize", SPECS / "alexnet.yaml", "--set", "blocks[0].out_channels=64")
    assert code == 0
    changed = set(stable_part(out).splitlines()) - set(GOLDEN.read_text().splitlines())
    conv1 = next(line for line in changed if line.startswith("features.block1.conv "))
    assert conv1.split()[2:4] == ["64x55x55", "23,296"]  # 64 * (3 * 11 * 11 + 1) parameters
    assert any(line.startswith("features.block2.conv ") for line in changed)  # its input channels changed too


def test_auto_device_runs_small_models_on_cpu_and_matches_meta() -> None:
    spec = load_spec(SPECS / "alexnet.yaml")
    auto, meta = summarize(spec), summarize(spec, device="meta")
    assert (auto.device, meta.device) == ("cpu", "meta")
    assert auto.stable() == meta.stable() and auto.ok and meta.ok


def test_auto_device_keeps_large_models_on_meta(write_spec: Callable[..., Path]) -> None:
    hidden = AUTO_MAX_PARAMS // 9216 + 1  # one hidden layer past the limit
    path = write_spec(f"extends: {SPECS / 'alexnet.yaml'}\nname: big\nclassifier: {{hidden: [{hidden}]}}\n")
    result = summarize(load_spec(path), depth=1)
    assert result.device == "meta" and result.stats.total_params > AUTO_MAX_PARAMS


def test_cpu_summary_does_not_move_the_random_stream() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    summarize(load_spec(SPECS / "alexnet_cifar.yaml"), device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_summary_checks_agree_and_report_totals() -> None:
    result = summarize(load_spec(SPECS / "alexnet.yaml"))
    assert result.ok and result.mismatches == []
    assert result.stats.total_params == 58_322_314
    assert "58,322,314 parameters (222.5 MiB as float32)" in result.totals()


def test_real_forward_on_cpu_with_batch(cli: Callable[..., tuple[int, str, str]]) -> None:
    args = ("--device", "cpu", "--batch-size", "4", "--depth", "1")
    code, out, _ = cli("summarize", SPECS / "alexnet_cifar.yaml", *args)
    assert code == 0
    assert "[4, 3, 32, 32]" in out and "block1" not in out  # depth 1 hides the blocks
    assert "shape check: 5 blocks" in out


def test_mismatch_between_torchinfo_and_static_shapes_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import builder.model.summary as summary_module

    spec = load_spec(SPECS / "alexnet.yaml")
    real = summary_module.infer

    def wrong(spec_: object) -> object:
        report = real(spec)
        blocks = [report.blocks[0].__class__(**{**report.blocks[0].__dict__, "out_shape": (1, 2, 3)}),
                  *report.blocks[1:]]
        return dataclasses.replace(report, blocks=blocks, all_blocks=blocks)

    monkeypatch.setattr(summary_module, "infer", wrong)
    result = summarize(spec)
    assert not result.ok
    assert result.mismatches[0].startswith("features.block1: torchinfo says [96, 27, 27]")


def test_bad_batch_size_is_a_clear_error() -> None:
    with pytest.raises(BuilderError, match="batch size"):
        summarize(load_spec(SPECS / "alexnet.yaml"), batch_size=0)


@pytest.mark.slow
def test_meta_summary_of_ten_billion_parameters_allocates_nothing(write_spec: Callable[..., Path]) -> None:
    path = write_spec(f"extends: {SPECS / 'alexnet.yaml'}\nname: huge\nclassifier: {{hidden: [1000000, 1000]}}\n")
    code = (  # VmHWM: peak resident memory of this process alone (ru_maxrss survives exec from pytest)
        "import re, sys; from builder.tools.cli import main; rc = main(['summarize', sys.argv[1]]); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "10,220,758,210 parameters" in proc.stdout  # 10.2 billion parameters counted
    peak_kib = int(proc.stdout.strip().splitlines()[-1])
    assert 0 < peak_kib < 2 * 2**20  # far below the 38 GiB the float32 weights would need


def test_meta_build_has_no_storage() -> None:
    from builder.model.build import build_model

    with torch.device("meta"):
        model = build_model(load_spec(SPECS / "alexnet.yaml"))
    assert all(p.is_meta for p in model.parameters())


def test_summary_build_skips_random_weight_init_only() -> None:
    from torch import nn

    from builder.model.summary import SkipInit

    state = torch.get_rng_state()
    with SkipInit():
        conv, norm = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
    assert torch.equal(torch.get_rng_state(), state)  # no random number was drawn
    assert conv.weight.shape == (8, 3, 3, 3) and torch.equal(norm.weight, torch.ones(8))  # non-random fills still run
    nn.Linear(4, 4)
    assert not torch.equal(torch.get_rng_state(), state)  # outside it, init draws as usual


def test_modules_nested_beyond_the_limit_are_refused_before_torchinfo_runs(
    write_spec: Callable[..., Path], tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    """25 nested sequences validate at once, but torchinfo's tally would take hours: one line, with the count."""
    inner = "{kind: activation, fn: relu}"
    for _ in range(23):
        inner = f"{{kind: sequence, blocks: [{inner}]}}"
    path = write_spec("name: deep\ninput: {channels: 1, height: 8, width: 8}\nnum_classes: 10\nblocks:\n"
                      f"  - {{out_channels: 4, kernel_size: 3}}\n  - {inner}\n")
    assert cli("validate", path)[0] == 0
    for command in (("summarize", path), ("train", path, "--out", tmp_path / "run")):
        code, _, err = cli(*command)
        assert code == 2 and err.count("\n") == 1 and "nest 25 levels deep" in err and "at most 18" in err
    assert not (tmp_path / "run").exists()
