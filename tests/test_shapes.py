"""Static shape and parameter inference, against the numbers of the AlexNet design."""

from __future__ import annotations

import pytest
from conftest import SPECS

from builder.lang.loading import load_spec
from builder.lang.shapes import infer, window_out


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "out"),
    [(227, 11, 4, 0, 55), (55, 3, 2, 0, 27), (27, 5, 1, 2, 27), (13, 3, 2, 0, 6), (32, 3, 2, 1, 16), (2, 5, 1, 0, -2)],
)
def test_window_arithmetic(size: int, kernel: int, stride: int, padding: int, out: int) -> None:
    assert window_out(size, kernel, stride, padding) == out


def test_alexnet_block_shapes_and_parameters() -> None:
    report = infer(load_spec(SPECS / "alexnet.yaml"))
    assert [b.out_shape for b in report.blocks] == [
        (96, 27, 27), (256, 13, 13), (384, 13, 13), (384, 13, 13), (256, 6, 6),
    ]
    assert report.flatten == 9216
    assert report.total_params == 58_322_314
    assert report.blocks[0].layers == ("conv 96 k11 s4 p0", "relu", "lrn size 5", "maxpool k3 s2 p0")
    assert report.blocks[2].layers == ("conv 384 k3 s1 p1", "relu")


def test_alexnet_1000_classes() -> None:
    assert infer(load_spec(SPECS / "alexnet.yaml", ["num_classes=1000"])).total_params == 62_378_344


def test_batchnorm_adds_two_parameters_per_channel_and_no_bias() -> None:
    plain = load_spec(SPECS / "alexnet.yaml", ["blocks[0].bias=false"])
    bn = load_spec(SPECS / "alexnet.yaml", ["blocks[0].bias=false", "blocks[0].norm={kind: batchnorm}"])
    assert infer(bn).blocks[0].params - infer(plain).blocks[0].params == 2 * 96
    assert infer(plain).blocks[0].params == 96 * 3 * 11 * 11


def test_adaptive_pool_fixes_the_flatten() -> None:
    spec = load_spec(SPECS / "alexnet.yaml", ["classifier.adaptive_pool=[2, 3]", "input.height=300"])
    assert infer(spec).flatten == 256 * 2 * 3
