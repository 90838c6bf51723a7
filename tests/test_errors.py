"""Validation problems become `FILE:LINE:COL: error: PATH: message`, all at once, in file order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lang.errors import Diagnostic, Loc, SpecError, format_path, suggest
from builder.lang.loading import load_spec

BAD = """\
name: bad
input: {channels: 3, height: 227, width: 227}
num_classes: true
defaults:
  norm: {kind: lrn, alpah: 1e-4}
  pool: {kind: maxx}
blocks:
  - {out_channels: 96, kernel_size: 11, stride: 4, pool_and_norm: true}
  - {out_channels: 256, kernal_size: 5, padding: 2}
  - {out_channels: 384, kernel_size: 0, stride: 1.5}
  - {out_channels: 384, kernel_size: 3, activation: reluu}
  - {out_channels: 30, kernel_size: 3, groups: 4}
classifier: {dropout: 1.0, hidden: [4096, -1]}
"""


def _errors(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return [str(d) for d in info.value.diagnostics]


def test_every_problem_is_reported_once_with_its_position(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BAD, "bad.yaml")
    assert _errors(path) == [
        f"{path}:3:14: error: num_classes: must be an integer, got true",
        f"{path}:5:21: error: defaults.norm.alpah: unknown field 'alpah'; did you mean 'alpha'?",
        f"{path}:6:16: error: defaults.pool.kind: unknown kind 'maxx'; expected one of max, avg, none; "
        "did you mean 'max'?",
        f"{path}:9:5: error: blocks[1].kernel_size: required field is missing",
        f"{path}:9:25: error: blocks[1].kernal_size: unknown field 'kernal_size'; did you mean 'kernel_size'?",
        f"{path}:10:38: error: blocks[2].kernel_size: must be > 0, got 0",
        f"{path}:10:49: error: blocks[2].stride: must be an integer, got 1.5",
        f"{path}:11:53: error: blocks[3].activation: must be one of relu, relu6, leaky_relu, gelu, silu, tanh, "
        "sigmoid, elu, hardswish, hardsigmoid, none; got 'reluu'; did you mean 'relu'?",
        f"{path}:12:48: error: blocks[4].groups: out_channels (30) must be divisible by groups (4)",
        f"{path}:13:23: error: classifier.dropout: must be < 1.0, got 1.0",
        f"{path}:13:43: error: classifier.hidden[1]: must be > 0, got -1",
    ]


def test_shape_problems_name_the_block(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        """\
        name: shapes
        input: {channels: 3, height: 32, width: 32}
        num_classes: 10
        blocks:
          - {out_channels: 6, kernel_size: 11, stride: 4, groups: 3, expect: [6, 5, 5]}
          - {out_channels: 16, kernel_size: 5, groups: 4}
          - {out_channels: 16, kernel_size: 5, pool_and_norm: true}
        """
    )
    assert _errors(path) == [
        f"{path}:5:70: error: blocks[0].expect: block1 outputs 6x6x6, not 6x5x5",
        f"{path}:6:48: error: blocks[1].groups: in_channels (6) must be divisible by groups (4)",
        f"{path}:7:5: error: blocks[2]: block3: spatial size collapses to -2x-2 (its input is 16x2x2)",
    ]


def test_missing_required_fields_point_at_the_mapping(write_spec: Callable[..., Path]) -> None:
    path = write_spec("name: x\ninput: {channels: 3}\nblocks: []\n")
    assert _errors(path) == [
        f"{path}:1:1: error: num_classes: required field is missing",
        f"{path}:2:8: error: input.height: required field is missing",
        f"{path}:2:8: error: input.width: required field is missing",
        f"{path}:3:9: error: blocks: must have at least 1 items",
    ]


def test_wrong_container_types(write_spec: Callable[..., Path]) -> None:
    path = write_spec("name: x\ninput: 5\nnum_classes: 2\nblocks: {a: 1}\n")
    errors = _errors(path)
    assert f"{path}:2:8: error: input: must be a mapping, got 5" in errors
    assert any(e.startswith(f"{path}:4:9: error: blocks: must be a list") for e in errors)


def test_helpers() -> None:
    assert format_path(("blocks", 2, "kernel_size")) == "blocks[2].kernel_size"
    assert suggest("kernal_size", ["kernel_size", "stride"]) == "; did you mean 'kernel_size'?"
    assert suggest("zzz", ["kernel_size"]) == ""
    assert str(Loc("--set a=1")) == "--set a=1"


def test_a_diagnostic_is_always_one_printable_line() -> None:
    diag = Diagnostic(Loc("--set name=a\x1eb", None, None), ("x\ny",), "unknown field 'x\ny'\u2028\x00")
    assert str(diag) == "--set name=a\\x1eb: error: x\\ny: unknown field 'x\\ny'\\u2028\\x00"
    assert str(diag).splitlines() == [str(diag)]
