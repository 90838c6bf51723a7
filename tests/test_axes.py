"""Per-axis kernel_size, stride, padding and dilation ([h, w]) on conv and pool blocks."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from builder.lang.shapes import infer
from builder.lang.spec import Spec
from builder.lang.walk import window_out
from builder.model.build import build_model


def _spec(blocks: list[dict[str, Any]], height: int = 13, width: int = 11) -> Spec:
    return Spec.model_validate({
        "name": "axes", "input": {"channels": 3, "height": height, "width": width}, "num_classes": 2,
        "blocks": blocks, "classifier": {"hidden": [], "adaptive_pool": [1, 1]},
    })


BLOCKS = {
    "inception 1x7": [{"out_channels": 6, "kernel_size": [1, 7], "padding": [0, 3], "bias": False}],
    "strided and dilated": [{"out_channels": 4, "kernel_size": [3, 2], "stride": [2, 1], "padding": [1, 0],
                             "dilation": [2, 3], "groups": 1}],
    "conv pool": [{"out_channels": 4, "kernel_size": 3, "pool": {"kind": "max", "kernel_size": [3, 2],
                                                                 "stride": [1, 2], "dilation": [2, 1]}}],
    "pools": [{"kind": "maxpool", "kernel_size": [3, 1], "stride": [2, 1], "padding": [1, 0], "dilation": [1, 1],
               "ceil_mode": True},
              {"kind": "avgpool", "kernel_size": [1, 3], "stride": 1, "padding": [0, 1]}],
    "projection": [{"kind": "residual", "body": [{"out_channels": 4, "kernel_size": 3, "stride": [2, 1],
                                                  "padding": 1}]}],
}


@pytest.mark.parametrize("name", BLOCKS)
def test_per_axis_inference_equals_the_built_module(name: str) -> None:
    """Output shape, parameters and mult-adds of every block, at every depth, as the built model's."""
    spec = _spec(BLOCKS[name])
    report = infer(spec)
    assert not report.problems
    model = build_model(spec).eval()
    shapes: dict[str, tuple[int, ...]] = {}
    macs = [0]

    def count(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):  # each output element: in/groups * kh * kw multiply-adds
            macs[0] += out[0].numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(count) for m in model.features.modules()]
    handles += [model.get_submodule(f"features.{s.name}").register_forward_hook(
        lambda m, i, o, n=s.name: shapes.__setitem__(n, tuple(o.shape[1:]))) for s in report.all_blocks]
    model(torch.zeros(1, 3, 13, 11))
    for handle in handles:
        handle.remove()
    assert shapes == {s.name: s.out_shape for s in report.all_blocks}
    assert sum(p.numel() for p in model.parameters()) == report.total_params
    assert macs[0] == sum(b.mult_adds for b in report.blocks)


def test_labels_show_each_axis_and_keep_square_ones() -> None:
    spec = _spec([{"out_channels": 192, "kernel_size": [1, 7], "padding": [0, 3]},
                  {"out_channels": 8, "kernel_size": 3, "padding": 1, "dilation": 2},
                  {"out_channels": 8, "kernel_size": [3, 3], "stride": [2, 2], "padding": 1},
                  {"kind": "maxpool", "kernel_size": 3, "stride": [1, 2], "padding": [1, 0], "dilation": [1, 2],
                   "ceil_mode": True}], height=32, width=32)
    labels = [s.layers[0] for s in infer(spec).blocks]
    assert labels == ["conv 192 k1x7 s1 p0x3", "conv 8 k3 s1 p1 d2", "conv 8 k3 s2 p1",
                      "maxpool k3 s1x2 p1x0 d1x2 ceil"]


def test_the_window_arithmetic_is_torchs() -> None:
    """window_out with dilation and ceil_mode against max_pool2d's output size, over small cases."""
    for size, k, s, p, d, ceil in itertools.product((5, 6, 7), (1, 2, 3), (1, 2, 3), (0, 1), (1, 2), (False, True)):
        if 2 * p > k or d * (k - 1) + 1 > size + 2 * p:
            continue
        out = F.max_pool2d(torch.zeros(1, 1, size, 1), (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode=ceil)
        assert window_out(size, k, s, p, ceil, d) == out.shape[2], (size, k, s, p, d, ceil)


SPEC = """\
name: bad
input: {{channels: 3, height: 8, width: 8}}
num_classes: 2
blocks:
  - {block}
"""


@pytest.mark.parametrize(("block", "message"), [
    ("{out_channels: 4, kernel_size: [1, 7, 3]}",
     "5:36: error: blocks[0].kernel_size: must be an integer or [h, w] (exactly two values), got 3 values"),
    ("{out_channels: 4, kernel_size: 3, padding: [1, 2, 3]}",
     "5:48: error: blocks[0].padding: must be an integer or [h, w] (exactly two values), got 3 values"),
    ("{out_channels: 4, kernel_size: [3, 0]}",
     "5:36: error: blocks[0].kernel_size: [h, w] must be two integers >= 1, got [3, 0]"),
    ("{out_channels: 4, kernel_size: 3, stride: 0}", "5:47: error: blocks[0].stride: must be > 0, got 0"),
    ("{out_channels: 4, kernel_size: 3, dilation: [1, 5]}",
     "5:49: error: blocks[0].dilation: block1: with dilation 1x5 the kernel spans 3x11, more than the padded "
     "input 8x8: the output is empty (its input is 3x8x8)"),
    ("{kind: maxpool, kernel_size: 3, dilation: 5, padding: 1}",
     "5:47: error: blocks[0].dilation: block1: with dilation 5 the kernel spans 11x11, more than the padded "
     "input 10x10: the output is empty (its input is 3x8x8)"),
    ("{kind: avgpool, kernel_size: 3, dilation: 2}",
     "5:47: error: blocks[0].dilation: average pooling has no dilation (nn.AvgPool2d has none); use a max pool "
     "or a dilated conv"),
    ("{kind: maxpool, kernel_size: [3, 1], padding: [1, 1]}",
     "5:51: error: blocks[0].padding: must be at most kernel_size/2 (1x0)"),
])
def test_bad_per_axis_fields_are_one_located_error(cli: Callable[..., tuple[int, str, str]],
                                                   write_spec: Callable[..., Path], block: str, message: str) -> None:
    path = write_spec(SPEC.format(block=block))
    code, out, err = cli("validate", path)
    assert (code, out, err) == (2, "", f"{path}:{message}\n")
