"""builder.tools.draw: PNG and SVG diagrams of a spec."""

from __future__ import annotations

import subprocess
import sys
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
