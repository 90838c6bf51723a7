"""builder.tools.draw: PNG and SVG diagrams of a spec."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.image
import pytest
import yaml

from builder.lang.errors import BuilderError
from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.lang.spec import Spec
from builder.tools.draw import draw

SPECS = Path(__file__).resolve().parent.parent / "arch_specs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", params=["alexnet.yaml", "alexnet_cifar.yaml"])
def spec(request: pytest.FixtureRequest) -> Spec:
    return load_spec(SPECS / request.param)


def test_png_is_a_readable_image(spec: Spec, tmp_path: Path) -> None:
    out = draw(spec, tmp_path / "net.png")
    assert out == tmp_path / "net.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(out).shape
    assert 600 < width < 5000 and 600 < height < 5000


def test_svg_keeps_names_shapes_and_params_as_text(spec: Spec, tmp_path: Path) -> None:
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays <text>, not glyph paths
        svg = draw(spec, tmp_path / "net.svg").read_text()
    report = infer(spec)
    assert "<svg" in svg
    assert spec.name in svg and f"{report.total_params:,}" in svg
    for block in report.blocks:
        assert block.name in svg
        assert " x ".join(map(str, block.out_shape)) in svg
        assert f"{block.params:,}" in svg
    assert f"{report.flatten:,}" in svg and f"{report.classifier_params:,}" in svg


def test_suffix_is_case_insensitive_and_parents_are_created(tmp_path: Path) -> None:
    out = draw(load_spec(SPECS / "alexnet_cifar.yaml"), tmp_path / "sub" / "net.SVG")
    assert out.is_file() and out.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize("name", ["net.pdf", "net.jpg", "net"])
def test_other_suffixes_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(BuilderError, match=r"\.png, \.svg"):
        draw(load_spec(SPECS / "alexnet.yaml"), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_many_blocks_wrap_into_rows(tmp_path: Path) -> None:
    blocks = [{"out_channels": 8 * (1 + i % 3), "kernel_size": 3, "padding": 1, "pool_and_norm": i % 4 == 3}
              for i in range(12)]
    data = {
        "name": "deep", "input": {"channels": 1, "height": 64, "width": 48}, "num_classes": 5,
        "defaults": {"norm": {"kind": "batchnorm"}, "pool": {"kind": "avg", "kernel_size": 2, "stride": 2}},
        "blocks": blocks, "classifier": {"hidden": [], "adaptive_pool": [2, 2], "dropout": 0.0},
    }
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump(data))
    out = draw(load_spec(path), tmp_path / "deep.png")
    height, width, _ = matplotlib.image.imread(out).shape
    assert height > width / 2  # 15 boxes in 3 rows, not one very wide strip


def test_a_spec_whose_shapes_collapse_is_refused(tmp_path: Path) -> None:
    spec = Spec.model_validate({
        "name": "tiny", "input": {"channels": 3, "height": 4, "width": 4}, "num_classes": 2,
        "blocks": [{"out_channels": 8, "kernel_size": 11}],
    })
    with pytest.raises(BuilderError, match="cannot draw tiny: block1: spatial size collapses"):
        draw(spec, tmp_path / "tiny.png")


def test_importing_draw_imports_neither_torch_nor_matplotlib() -> None:
    code = "import sys, builder.tools.draw; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- Composite blocks ----------------------------------------------------------------------

COMPOSITE = """\
name: composite
input: {channels: 3, height: 16, width: 16}
num_classes: 3
templates:
  basic:
    params: [width, stride]
    defaults: {stride: 1}
    block:
      kind: residual
      activation: relu
      body:
        - {name: conv1, out_channels: $width, kernel_size: 3, stride: $stride, padding: 1, bias: false,
           norm: {kind: batchnorm}}
        - {name: conv2, out_channels: $width, kernel_size: 3, padding: 1, bias: false, norm: {kind: batchnorm},
           activation: none}
blocks:
  - {name: stem, out_channels: 8, kernel_size: 3, padding: 1}
  - {name: stage1, kind: repeat, times: 3, block: {kind: use, template: basic, args: {width: 8}}}
  - {name: stage2, kind: repeat, times: 2, block: {kind: use, template: basic, args: {width: 16}},
     first: {args: {stride: 2}}}
  - name: mix
    kind: parallel
    branches:
      - []
      - [{out_channels: 4, kernel_size: 1}, {out_channels: 6, kernel_size: 3, padding: 1}]
      - [{kind: maxpool, kernel_size: 3, stride: 1, padding: 1}, {out_channels: 2, kernel_size: 1}]
  - name: fuse
    kind: parallel
    merge: add
    branches: [[{out_channels: 40, kernel_size: 1}], [{out_channels: 40, kernel_size: 3, padding: 1}]]
  - {name: pool, kind: adaptive_avgpool}
classifier: {hidden: [], dropout: 0.0}
"""


def _svg(spec: Spec, path: Path) -> str:
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays <text>, not glyph paths
        return draw(spec, path).read_text()


def _texts(svg: str) -> list[str]:
    """The text elements of an SVG, in document order."""
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


@pytest.fixture
def composite(write_spec: Callable[..., Path]) -> Spec:
    return load_spec(write_spec(COMPOSITE, "composite.yaml"))


def test_composite_spec_draws_to_png_and_svg(composite: Spec, tmp_path: Path) -> None:
    assert draw(composite, tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    height, width, _ = matplotlib.image.imread(tmp_path / "c.png").shape
    assert 300 < width < 8000 and 300 < height < 8000
    assert "<svg" in draw(composite, tmp_path / "c.svg").read_text()


def test_svg_shows_skips_merges_and_the_shapes_infer_gives(composite: Spec, tmp_path: Path) -> None:
    texts = _texts(_svg(composite, tmp_path / "c.svg"))
    report = infer(composite)
    assert "identity" in texts  # stage1's shortcuts and mix's empty branch
    assert "projection 1x1 s2 + bn" in texts  # stage2.block1 halves the size and doubles the channels
    assert "add, relu" in texts and "concat" in texts and "add" in texts  # residual, mix, fuse
    joined = "\n".join(texts)
    for block in report.blocks:  # every top-level block: name, output shape, parameters
        assert block.name in texts
        assert " x ".join(map(str, block.out_shape)) in joined
        assert f"{block.params:,}" in joined
    for name in ("branch2.block1", "branch2.block2", "branch3.block1", "branch3.block2"):
        assert name in texts  # branch blocks are titled by their path inside the parallel block
        assert " x ".join(map(str, {b.name: b for b in report.all_blocks}[f"mix.{name}"].out_shape)) in joined


def test_identical_copies_are_folded_into_one_with_a_count(composite: Spec, tmp_path: Path) -> None:
    """stage1's three copies draw once; stage2's first copy differs (stride 2), the second stands alone."""
    texts = _texts(_svg(composite, tmp_path / "c.svg"))
    shapes = {b.name: b for b in infer(composite).all_blocks}
    assert "block1 \u2026 block3 \u00d7 3" in texts
    run = sum(shapes[f"stage1.block{i}"].params for i in (1, 2, 3))
    assert any(f"{run:,} params" in t for t in texts)
    assert "block1" in texts and "block2" in texts  # stage2: two different blocks, each drawn
    assert texts.count("body.conv1") == 3  # stage1's one drawn copy, stage2's two blocks


@pytest.mark.parametrize(("shortcut", "norm", "label"), [
    ("auto", "batchnorm", "identity"),
    ("identity", "batchnorm", "identity"),
    ("projection", "batchnorm", "projection 1x1 s1 + bn"),
    ("projection", "none", "projection 1x1 s1"),
])
def test_the_shortcut_label_says_what_the_builder_builds(shortcut: str, norm: str, label: str,
                                                         tmp_path: Path) -> None:
    block = {"kind": "residual", "shortcut": shortcut, "shortcut_norm": norm,
             "body": [{"out_channels": 8, "kernel_size": 3, "padding": 1}]}
    spec = Spec.model_validate({"name": "res", "input": {"channels": 8, "height": 8, "width": 8},
                                "num_classes": 2, "blocks": [block], "classifier": {"hidden": []}})
    texts = _texts(_svg(spec, tmp_path / "r.svg"))
    assert label in texts
    assert {"identity", "projection 1x1 s1", "projection 1x1 s1 + bn"} - {label} & set(texts) == set()


def test_a_residual_without_shortcut_says_so(tmp_path: Path) -> None:
    block = {"kind": "residual", "shortcut": "identity_or_none", "activation": "relu",
             "body": [{"out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1}]}
    spec = Spec.model_validate({"name": "res", "input": {"channels": 4, "height": 8, "width": 8},
                                "num_classes": 2, "blocks": [block], "classifier": {"hidden": []}})
    texts = _texts(_svg(spec, tmp_path / "r.svg"))
    assert "no shortcut, relu" in texts and "identity" not in texts


def _dense(layers: int) -> str:
    """A DenseNet-like spec: dense blocks of `layers` dense layers (parallel identity + BN-ReLU-conv)."""
    dense = ("{kind: repeat, times: TIMES, block: {kind: parallel, branches: [[], [{kind: batchnorm}, "
             "{kind: activation, fn: relu}, {out_channels: 16, kernel_size: 1, bias: false, activation: none}, "
             "{kind: batchnorm}, {kind: activation, fn: relu}, "
             "{out_channels: 4, kernel_size: 3, padding: 1, bias: false, activation: none}]]}}")
    dense = dense.replace("TIMES", str(layers))
    transition = ("{kind: sequence, blocks: [{kind: batchnorm}, {out_channels: 8, kernel_size: 1}, "
                  "{kind: avgpool, kernel_size: 2, stride: 2}]}")
    blocks = "\n".join(f"  - {b}" for b in [dense, transition] * 3 + [dense])
    return (f"name: dense\ninput: {{channels: 3, height: 32, width: 32}}\nnum_classes: 10\nblocks:\n"
            f"  - {{out_channels: 8, kernel_size: 3, padding: 1}}\n{blocks}\n"
            "classifier: {hidden: [], dropout: 0.0, adaptive_pool: [1, 1]}\n")


def test_a_deep_spec_draws_no_larger_than_a_shallow_one(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """96 dense layers draw like 8: each dense block is one folded card (so drawing stays quick)."""
    deep, shallow = (load_spec(write_spec(_dense(n), f"dense{n}.yaml")) for n in (24, 2))
    assert sum(b.kind == "parallel" for b in infer(deep).all_blocks) == 96
    deep_svg, shallow_svg = (_svg(spec, tmp_path / f"{i}.svg") for i, spec in enumerate((deep, shallow)))
    deep_texts, shallow_texts = _texts(deep_svg), _texts(shallow_svg)
    assert len(deep_texts) == len(shallow_texts)
    assert "block1 \u2026 block24 \u00d7 24" in deep_texts and "block1 \u2026 block2 \u00d7 2" in shallow_texts
    assert _area(deep_svg) < 1.5 * _area(shallow_svg)  # unfolded, 96 layers' cards would take several times it


def _area(svg: str) -> float:
    """The canvas of an SVG drawing, in square points."""
    size = re.search(r'<svg[^>]*\swidth="([\d.]+)pt"[^>]*\sheight="([\d.]+)pt"', svg)
    assert size is not None
    return float(size[1]) * float(size[2])


def test_draw_cli_renders_a_composite_spec(write_spec: Callable[..., Path], tmp_path: Path,
                                           cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = cli("draw", write_spec(COMPOSITE, "composite.yaml"), "-o", tmp_path / "c.svg")
    assert (code, err) == (0, "") and str(tmp_path / "c.svg") in out and (tmp_path / "c.svg").is_file()


@pytest.mark.parametrize("name", ["resnet18.yaml", "googlenet.yaml"])
def test_canon_specs_show_every_top_level_block(name: str, tmp_path: Path) -> None:
    spec = load_spec(SPECS / name)
    report = infer(spec)
    texts = _texts(_svg(spec, tmp_path / "net.svg"))
    joined = "\n".join(texts)
    assert f"{report.total_params:,} parameters" in joined
    for block in report.blocks:
        assert block.name in texts and f"{block.params:,} params" in joined
        assert " x ".join(map(str, block.out_shape)) in joined
    merges = {"residual": "add, relu", "parallel": "concat"}
    for kind, label in merges.items():  # a merge node exactly when the net has that kind
        assert (kind in {b.kind for b in report.all_blocks}) == (label in texts)
