"""Channel split (`parallel` with `input: split`) and `channel_shuffle`: ShuffleNetV2's unit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.models.shufflenetv2 import channel_shuffle

from builder.lang.shapes import infer
from builder.lang.spec import Spec, apply_width
from builder.model.build import build_model


def _spec(blocks: list[dict[str, Any]], channels: int = 6) -> Spec:
    return Spec.model_validate({
        "name": "split", "input": {"channels": channels, "height": 5, "width": 5}, "num_classes": 2,
        "blocks": blocks, "classifier": {"hidden": [], "adaptive_pool": [1, 1]},
    })


def test_each_branch_gets_its_chunk_in_torch_chunk_order() -> None:
    # three chunks of 2 channels: identity, a 1x1 conv to 4, a relu
    spec = _spec([{"kind": "parallel", "input": "split", "name": "unit", "branches": [
        [], [{"out_channels": 4, "kernel_size": 1}], [{"kind": "activation", "fn": "relu"}]]}])
    report = infer(spec)
    assert [(s.name, s.in_shape, s.out_shape) for s in report.all_blocks] == [
        ("unit", (6, 5, 5), (8, 5, 5)), ("unit.branch2.block1", (2, 5, 5), (4, 5, 5)),
        ("unit.branch3.block1", (2, 5, 5), (2, 5, 5))]
    assert report.total_params == 2 * 4 + 4 + 8 * 2 + 2
    model = build_model(spec).eval()
    x = torch.randn(3, 6, 5, 5)
    with torch.no_grad():
        out = model.features(x)
        conv = model.features.unit.branch2.block1
    a, b, c = x.chunk(3, dim=1)
    assert torch.equal(out, torch.cat([a, conv(b), c.relu()], dim=1))


def test_channel_shuffle_is_torchvisions() -> None:
    model = build_model(_spec([{"kind": "channel_shuffle", "groups": 3}])).eval()
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        assert torch.equal(model.features(x), channel_shuffle(x, 3))
        assert torch.equal(model.features(x.contiguous(memory_format=torch.channels_last)), channel_shuffle(x, 3))


def test_a_split_keeps_dividing_when_the_width_scales() -> None:
    spec = Spec.model_validate({
        "name": "w", "input": {"channels": 3, "height": 5, "width": 5}, "num_classes": 2, "width": 0.75,
        "blocks": [{"out_channels": 6, "kernel_size": 1},
                   {"kind": "parallel", "input": "split", "branches": [[], [{"out_channels": 3, "kernel_size": 1}]]}],
        "classifier": {"hidden": [], "adaptive_pool": [1, 1]},
    })
    scaled = apply_width(spec)
    assert scaled.blocks[0].out_channels % 2 == 0 and not infer(scaled).problems


SPEC = """\
name: bad
input: {{channels: 3, height: 8, width: 8}}
num_classes: 2
blocks:
  - {{out_channels: 117, kernel_size: 1}}
  - {block}
"""


@pytest.mark.parametrize(("block", "message"), [
    ("{kind: parallel, input: split, branches: [[], []]}",
     "6:29: error: blocks[1].input: split of 117 channels into 2: the channels must be a multiple of the "
     "branches (2) (its input is 117x8x8)"),
    ("{kind: channel_shuffle, groups: 2}",
     "6:37: error: blocks[1].groups: channel shuffle of 117 channels in 2 groups: groups must divide the "
     "channels (its input is 117x8x8)"),
    ("{kind: parallel, input: half, branches: [[]]}",
     "6:29: error: blocks[1].input: must be one of same, split; got 'half'"),
])


def test_bad_splits_and_shuffles_are_one_located_error(cli: Callable[..., tuple[int, str, str]],
                                                       write_spec: Callable[..., Path], block: str,
                                                       message: str) -> None:
    path = write_spec(SPEC.format(block=block))
    code, out, err = cli("validate", path)
    assert (code, out, err) == (2, "", f"{path}:{message}\n")
