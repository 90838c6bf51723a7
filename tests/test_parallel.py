"""`parallel` with `merge: mul`: an elementwise product of the branches, a 1x1 branch broadcast over
H x W (LR-ASPP's `cbr(x) * scale(x)`), and one located line for shapes that do not multiply."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from builder.lang.shapes import infer
from builder.lang.spec import Spec
from builder.model.build import build_model

CONV1 = {"out_channels": 4, "kernel_size": 1}


def _spec(block: dict[str, object]) -> Spec:
    return Spec.model_validate({
        "name": "mul", "input": {"channels": 3, "height": 5, "width": 7}, "num_classes": 2,
        "blocks": [{**block, "name": "x"}], "classifier": {"hidden": [], "adaptive_pool": [1, 1]},
    })


def test_a_mul_broadcasts_a_1x1_branch_over_the_other() -> None:
    spec = _spec({"kind": "parallel", "merge": "mul", "branches": [
        [{**CONV1, "name": "cbr", "activation": "relu"}],
        [{"kind": "adaptive_avgpool"}, {**CONV1, "name": "scale", "bias": False, "activation": "sigmoid"}]]})
    report = infer(spec)
    assert not report.problems and report.blocks[0].out_shape == (4, 5, 7)
    assert report.blocks[0].params == 3 * 4 + 4 + 3 * 4
    assert "mul of 2 branches" in report.blocks[0].layers
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 5, 7)
    cbr, scale = model.features.x.branch1.cbr.conv, model.features.x.branch2.scale.conv
    with torch.no_grad():
        want = cbr(x).relu() * scale(x.mean((2, 3), keepdim=True)).sigmoid()
        assert torch.allclose(model.features(x), want, atol=1e-6)


def test_a_mul_of_equal_shapes_is_elementwise() -> None:
    spec = _spec({"kind": "parallel", "merge": "mul", "branches": [[], [{"kind": "activation", "fn": "sigmoid"}]]})
    x = torch.randn(2, 3, 5, 7)
    with torch.no_grad():
        assert torch.equal(build_model(spec).eval().features(x), x * x.sigmoid())


SPEC = """\
name: bad
input: {{channels: 3, height: 8, width: 8}}
num_classes: 2
blocks:
  - {block}
"""


@pytest.mark.parametrize(("block", "message"), [
    ("{kind: parallel, merge: mul, branches: [[], [{out_channels: 4, kernel_size: 1}]]}",
     "5:5: error: blocks[0]: parallel mul of 3x8x8 and 4x8x8 (equal channels, and each spatial size 8x8 or 1x1, "
     "broadcast)"),
    ("{kind: parallel, merge: mul, branches: [[], [{kind: maxpool, kernel_size: 2}]]}",
     "5:5: error: blocks[0]: parallel mul of 3x8x8 and 3x4x4 (equal channels, and each spatial size 8x8 or 1x1, "
     "broadcast)"),
    ("{kind: parallel, merge: product, branches: [[]]}",
     "5:29: error: blocks[0].merge: must be one of concat, add, mul; got 'product'"),
])
def test_shapes_that_do_not_multiply_are_one_located_line(cli: Callable[..., tuple[int, str, str]],
                                                         write_spec: Callable[..., Path], block: str,
                                                         message: str) -> None:
    path = write_spec(SPEC.format(block=block))
    code, out, err = cli("validate", path)
    assert (code, out, err) == (2, "", f"{path}:{message}\n")
