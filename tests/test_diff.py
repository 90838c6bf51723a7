"""`diff`: what differs between two specs, block by block, and the totals."""

from __future__ import annotations

from collections.abc import Callable

from conftest import SPECS

from builder.lang.diff import diff_specs
from builder.lang.loading import load_spec


def test_same_spec_has_no_differences() -> None:
    spec = load_spec(SPECS / "alexnet.yaml")
    lines = diff_specs(spec, spec)
    assert lines[0] == "spec: same" and "block3: same" in lines
    assert lines[-1] == "total parameters: 58,322,314 -> 58,322,314 (+0, +0.0%)"


def test_grouped_variant_diff() -> None:
    lines = diff_specs(load_spec(SPECS / "alexnet.yaml"), load_spec(SPECS / "alexnet_grouped.yaml"))
    text = "\n".join(lines)
    assert "block2:\n    groups: 1 -> 2\n    parameters: 614,656 -> 307,456 (-307,200, -50.0%)" in text
    assert "block1: same" in lines
    assert "    num_classes: 10 -> 1000" in lines
    assert lines[-1] == "total parameters: 58,322,314 -> 60,965,224 (+2,642,910, +4.5%)"


def test_norm_change_and_shape_change_are_shown() -> None:
    a = load_spec(SPECS / "alexnet.yaml")
    b = load_spec(SPECS / "alexnet.yaml", ["blocks[0].norm={kind: batchnorm}", "blocks[0].stride=2"])
    text = "\n".join(diff_specs(a, b))
    assert ("norm: lrn(size=5, alpha=0.0001, beta=0.75, k=2.0) -> batchnorm(eps=1e-05, momentum=0.1, "
            "frozen_weight=False)") in text
    assert "output: 96x27x27 -> 96x54x54" in text
    assert "flatten: 9216 -> 36864" in text


def test_cli_diff_applies_set_to_b(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = cli("diff", SPECS / "alexnet.yaml", SPECS / "alexnet.yaml", "--set", "blocks[4].out_channels=128")
    assert code == 0
    assert "block5:\n    out_channels: 256 -> 128\n    output: 256x6x6 -> 128x6x6" in out


def test_cli_diff_bad_spec_exits_2(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, _, err = cli("diff", SPECS / "alexnet.yaml", SPECS / "nope.yaml")
    assert code == 2 and "no such file" in err


def test_nested_blocks_are_compared_and_only_differences_listed() -> None:
    lines = diff_specs(load_spec(SPECS / "resnet18.yaml"), load_spec(SPECS / "resnet34.yaml"))
    assert "layer1.block3: only in B: output 64x56x56, 73,984 parameters" in lines
    assert not [line for line in lines if line.startswith("layer1.block3.")]  # its children are implied
    assert not [line for line in lines if line.startswith("layer1.block1")]  # unchanged nested blocks are quiet
    stride = diff_specs(load_spec(SPECS / "resnet18.yaml"),
                        load_spec(SPECS / "resnet18.yaml", ["templates.basic.block.activation=none"]))
    assert "layer1.block1:" in stride and "    activation: relu -> none" in stride
