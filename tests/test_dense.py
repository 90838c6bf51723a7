"""Dense prediction in the block language: conv_transpose, upsample, skip, and templates nested in
their own arguments. Static shapes equal the built modules'; bad specs are one located line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from builder.lang.errors import SpecError
from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.lang.spec import Spec
from builder.model.build import build_model

Cli = Callable[..., tuple[int, str, str]]
HEAD = """\
name: d
input: {channels: 3, height: 16, width: 16}
num_classes: 4
classifier: {hidden: [], dropout: 0, adaptive_pool: [1, 1]}
"""


def _spec(blocks: list[dict[str, Any]], size: tuple[int, int] = (16, 16), channels: int = 3) -> Spec:
    return Spec.model_validate({
        "name": "d", "input": {"channels": channels, "height": size[0], "width": size[1]}, "num_classes": 4,
        "blocks": blocks, "classifier": {"hidden": [], "dropout": 0, "adaptive_pool": [1, 1]}})


def _static_is_real(spec: Spec) -> None:
    """Every block's static output shape and parameters equal the built module's, at every depth."""
    report = infer(spec)
    assert not report.problems and report.flatten is not None, report.problems
    model = build_model(spec).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for s in report.all_blocks:
        model.get_submodule(f"features.{s.name}").register_forward_hook(
            lambda m, i, o, n=s.name: seen.__setitem__(n, tuple(o.shape[1:])))
    model(torch.randn(2, spec.input.channels, spec.input.height, spec.input.width))
    assert seen == {s.name: s.out_shape for s in report.all_blocks}
    for s in report.all_blocks:
        assert sum(p.numel() for p in model.get_submodule(f"features.{s.name}").parameters()) == s.params
    assert sum(p.numel() for p in model.parameters()) == report.total_params


@pytest.mark.parametrize(("k", "s", "p", "op", "d"), [
    (2, 2, 0, 0, 1), (3, 2, 1, 1, 1), (4, 2, 1, 0, 1), (3, 1, 1, 0, 1), (3, 3, 0, 2, 1), (3, 2, 2, 1, 2),
    (5, 1, 0, 0, 3),
])
def test_conv_transpose_has_torchs_output_size(k: int, s: int, p: int, op: int, d: int) -> None:
    block = {"kind": "conv_transpose", "out_channels": 5, "kernel_size": k, "stride": s, "padding": p,
             "output_padding": op, "dilation": d, "bias": False, "norm": {"kind": "batchnorm"}, "activation": "relu"}
    for size in [(7, 7), (9, 4)]:
        _static_is_real(_spec([block], size))
    made = build_model(_spec([block], (7, 7))).features.block1
    assert [n for n, _ in made.named_children()] == ["conv", "norm", "act"]
    assert isinstance(made.conv, torch.nn.ConvTranspose2d) and made.conv.bias is None


def test_conv_transpose_is_plain_by_default() -> None:
    spec = _spec([{"kind": "conv_transpose", "out_channels": 5, "kernel_size": 2, "stride": 2}])
    assert [n for n, _ in build_model(spec).features.block1.named_children()] == ["conv"]
    assert infer(spec).blocks[0].layers == ("conv_transpose 5 k2 s2 p0",)
    assert infer(spec).blocks[0].params == 3 * 5 * 4 + 5


@pytest.mark.parametrize("block", [
    {"kind": "upsample", "scale_factor": 2},
    {"kind": "upsample", "scale_factor": 1.5, "mode": "bilinear"},
    {"kind": "upsample", "scale_factor": 0.5, "mode": "bilinear", "align_corners": True},
    {"kind": "upsample", "size": [20, 9], "mode": "nearest"},
])
def test_upsample_has_torchs_output_size(block: dict[str, Any]) -> None:
    for size in [(16, 16), (7, 11)]:
        _static_is_real(_spec([block], size))


@pytest.mark.parametrize("match", ["resize", "pad", "crop"])
@pytest.mark.parametrize("merge", ["concat", "add", "none"])
def test_a_skip_fits_unequal_sizes_as_its_match_says(match: str, merge: str) -> None:
    # 11 -> pool 5 -> up 10, 9 -> pool 4 -> up 8 (the body is smaller); the conv makes it larger again
    for body_tail in ([], [{"out_channels": 3, "kernel_size": 1, "padding": 2}]):
        body = [{"kind": "maxpool", "kernel_size": 2},
                {"kind": "conv_transpose", "out_channels": 3, "kernel_size": 2, "stride": 2}, *body_tail]
        _static_is_real(_spec([{"kind": "skip", "merge": merge, "match": match, "body": body}], (11, 9)))


def test_pad_and_crop_centre_the_smaller_in_the_larger() -> None:
    from builder.model.blocks import _fit

    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    small = torch.ones(1, 1, 2, 3)
    padded = _fit(small, x, "pad")  # 1 row above and 2 below, 1 column left and right
    assert padded.shape[-2:] == (5, 5) and padded[0, 0, 1:3, 1:4].sum() == 6 and padded.sum() == 6
    cropped = _fit(x, small, "crop")
    assert cropped[0, 0].tolist() == [[6.0, 7.0, 8.0], [11.0, 12.0, 13.0]]


def test_a_skip_concat_puts_the_input_first() -> None:
    spec = _spec([{"kind": "skip", "body": [{"out_channels": 2, "kernel_size": 1}]}], channels=3)
    model = build_model(spec).eval()
    x = torch.randn(1, 3, 16, 16)
    out = model.features.block1(x)
    assert out.shape == (1, 5, 16, 16) and torch.equal(out[:, :3], x)
    assert infer(spec).blocks[0].out_shape == (5, 16, 16)


def test_resize_is_bilinear_without_align_corners() -> None:
    spec = _spec([{"kind": "skip", "merge": "none", "match": "resize",
                   "body": [{"kind": "maxpool", "kernel_size": 2}]}], (9, 9))
    model = build_model(spec).eval()
    x = torch.randn(1, 3, 9, 9)
    want = torch.nn.functional.interpolate(torch.nn.functional.max_pool2d(x, 2), size=(9, 9), mode="bilinear")
    assert torch.equal(model.features.block1(x), want)


def test_a_template_may_be_nested_in_its_own_arguments(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(HEAD + """\
templates:
  level:
    params: [f, inner]
    block:
      kind: sequence
      blocks:
        - {name: down, out_channels: $f, kernel_size: 3, padding: 1}
        - kind: skip
          name: skip
          body: [{kind: maxpool, kernel_size: 2}, $inner,
                 {kind: conv_transpose, name: up, out_channels: $f, kernel_size: 2, stride: 2}]
blocks:
  - kind: use
    template: level
    name: level1
    args: {f: 4, inner: {kind: use, template: level, name: level2, args: {f: 8, inner: {kind: dropout}}}}
"""))
    names = [s.name for s in infer(spec).all_blocks]
    assert "level1.skip.body.level2.skip.body.block2" in names and names[-1] == "level1.skip.body.up"
    assert infer(spec).blocks[0].out_shape == (8, 16, 16)
    _static_is_real(spec)


@pytest.mark.parametrize(("templates", "use", "message"), [
    ("  t: {params: [x], block: {kind: sequence, blocks: [$x, {kind: use, template: t, args: {x: $x}}]}}\n",
     "{kind: use, template: t, args: {x: {kind: dropout}}}", "template 't' uses itself (t -> t)"),
    ("  t: {params: [x], defaults: {x: {kind: use, template: t}}, block: {kind: sequence, blocks: [$x]}}\n",
     "{kind: use, template: t}", "template 't' uses itself (t -> t)"),
    ("  t: {params: [x], block: {kind: sequence, blocks: [$x]}}\n"
     "  u: {block: {kind: use, template: t, args: {x: {kind: use, template: u}}}}\n",
     "{kind: use, template: u}", "template 'u' uses itself (u -> u)"),
])
def test_a_template_still_may_not_use_itself_from_its_own_definition(
    write_spec: Callable[..., Path], templates: str, use: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(write_spec(HEAD + "templates:\n" + templates + f"blocks:\n  - {use}\n"))


@pytest.mark.parametrize(("block", "message"), [
    ("{kind: conv_transpose, out_channels: 4, kernel_size: 3, stride: 2, output_padding: 2}",
     "blocks[0].output_padding: must be smaller than stride or dilation (here at most 1)"),
    ("{kind: upsample, mode: nearest, scale_factor: 2, align_corners: true}",
     "blocks[0].align_corners: applies to mode bilinear only"),
    ("{kind: upsample}", "blocks[0].scale_factor: give exactly one of scale_factor and size"),
    ("{kind: upsample, scale_factor: 2, size: [4, 4]}", "give exactly one of scale_factor and size"),
    ("{kind: upsample, scale_factor: 0.01}", "blocks[0]: block1: spatial size collapses to 0x0"),
    ("{kind: skip, merge: add, body: [{out_channels: 4, kernel_size: 1}]}",
     "blocks[0]: block1: skip add of 3x16x16 and 4x16x16 (channels differ)"),
    ("{kind: skip, match: fit, body: [{kind: dropout}]}", "blocks[0].match: "),
])
def test_bad_dense_blocks_are_one_located_line(write_spec: Callable[..., Path], block: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write_spec(HEAD + f"blocks:\n  - {block}\n"))
    lines = str(info.value).splitlines()
    assert len(lines) == 1 and message in lines[0] and "spec.yaml:6:" in lines[0], lines


LEVELS = HEAD.replace("height: 16, width: 16", "height: 161, width: 161") + """\
templates:
  level:
    params: [inner]
    block:
      kind: skip
      body: [{kind: maxpool, kernel_size: 2}, $inner, {kind: upsample, scale_factor: 2}]
blocks:
  - {kind: use, template: level, args: {inner: {kind: use, template: level, args: {inner: {kind: use, template: level,
     args: {inner: {kind: use, template: level, args: {inner: {out_channels: 3, kernel_size: 3, padding: 1}}}}}}}}}
"""


def test_a_concat_of_unequal_sizes_names_the_input_sizes_that_fit(write_spec: Callable[..., Path], cli: Cli) -> None:
    path = write_spec(LEVELS)
    code, out, err = cli("validate", path)
    assert code == 2 and out == ""
    assert err.strip() == (f"{path}:9:7: error: blocks[0]: block1: concat of 3x161x161 (the skip) and 12x160x160 "
                           "(its body) at input 161x161; the nearest valid input sizes are 160 and 176 (or set "
                           "match: resize, pad or crop)")
    code, _, err = cli("validate", path, "--set", "input.height=168", "--set", "input.width=170")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("block1.body.block2.body.block2.body.block2: concat of 3x21x21 (the skip) and 3x20x20 (its body) at "
            "input 168x170; the nearest valid heights are 160 and 176; the nearest valid widths are 160 and 176") in err
    code, _, err = cli("validate", path, "--set", "input.height=160", "--set", "input.width=176")
    assert code == 0, err


def test_the_search_reports_when_no_size_nearby_fits(write_spec: Callable[..., Path]) -> None:
    never = HEAD + "blocks:\n  - {kind: skip, body: [{kind: maxpool, kernel_size: 2, stride: 1}]}\n"
    with pytest.raises(SpecError, match="no input size within 256 of it fits"):
        load_spec(write_spec(never))


def test_the_dense_kinds_are_in_the_schema() -> None:
    from builder.lang.schema import spec_schema

    text = yaml.safe_dump(spec_schema())
    assert all(kind in text for kind in ("conv_transpose", "upsample", "skip"))


DENSE = """\
name: seg
input: {channels: 3, height: 16, width: 16}
num_classes: 5
blocks:
  - {out_channels: 8, kernel_size: 3, stride: 2, padding: 1}
  - {kind: upsample, scale_factor: 2, mode: bilinear}
head: {kind: dense}
"""


def test_a_dense_head_is_a_1x1_conv_at_every_pixel(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = load_spec(write_spec(DENSE))
    report = infer(spec)
    model = build_model(spec).eval()
    assert [n for n, _ in model.named_children()] == ["features", "head"]
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5, 16, 16)
    assert report.head is not None and report.head.out == (5, 16, 16) and report.head.flatten is None
    assert report.classifier_params == 8 * 5 + 5 and report.classifier_mult_adds == 8 * 5 * 16 * 16
    assert report.total_params == sum(p.numel() for p in model.parameters())


def test_a_dense_head_must_predict_every_input_pixel(write_spec: Callable[..., Path], cli: Cli) -> None:
    path = write_spec(DENSE.replace("  - {kind: upsample, scale_factor: 2, mode: bilinear}\n", ""))
    code, out, err = cli("validate", path)
    assert code == 2 and out == ""
    assert err.strip() == (f"{path}:6:7: error: head: a dense head predicts every input pixel, but the last block "
                           "outputs 8x8x8, not 16x16; end the blocks at the input's size (an upsample, or a skip "
                           "with match: resize), or give the head resize: bilinear")
    code, _, err = cli("validate", path, "--set", "num_classes=null")
    assert code == 2 and "num_classes" in err


def test_a_dense_head_may_resize_its_logits_to_the_input(write_spec: Callable[..., Path]) -> None:
    """torchvision's FCN and DeepLab: the 1x1 conv at the features' size, then bilinear to the input's."""
    text = DENSE.replace("  - {kind: upsample, scale_factor: 2, mode: bilinear}\n", "")
    spec = load_spec(write_spec(text.replace("{kind: dense}", "{kind: dense, resize: bilinear}")))
    report = infer(spec)
    assert not report.problems and report.head is not None and report.head.out == (5, 16, 16)
    assert report.classifier_mult_adds == 8 * 5 * 8 * 8  # the conv runs at 8x8
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 15, 17)  # any size: to the input's, not by a factor
    want = torch.nn.functional.interpolate(model.head(model.features(x)), size=(15, 17), mode="bilinear")
    assert torch.equal(model(x), want)
    assert [n for n, _ in model.named_children()] == ["features", "head"]


def test_padded_size_is_the_smallest_that_fits_on_each_axis(write_spec: Callable[..., Path]) -> None:
    from builder.lang.kinds.skip import padded_size

    spec = load_spec(write_spec(LEVELS.replace("height: 161, width: 161", "height: 160, width: 160")))
    assert padded_size(spec, 161, 160) == (176, 160) and padded_size(spec, 1, 33) == (16, 48)
    assert padded_size(_spec([{"kind": "dropout"}]), 7, 5) == (7, 5)  # no skip: any size fits
