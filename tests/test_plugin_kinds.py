"""A user's own block kind: an installed package registers it (entry point or register_kind); YAML only names it.

Each case runs in a fresh interpreter: the registry is sealed once the first spec is validated,
so a kind must be known before that, as it is for a real installed package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

PLUGIN = '''\
"""A per-channel learnable scale: out = x * weight[c]."""
from __future__ import annotations

from typing import Literal

from builder.lang.base import Named
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width, unit_stride


class ScaleBlock(Named):
    kind: Literal["scale"]
    init: float = 1.0


def _infer(walk, block, at, shape):
    return shape, shape[0], 0, (Label(f"scale {block.init:g}", "norm"),)


def build(ctx, block, shape):
    import torch
    from torch import nn

    class Scale(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.full((channels, 1, 1), block.init))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    return Scale(shape.in_shape[0])


SCALE = KindDef(tags=("scale",), model=ScaleBlock, infer=_infer, children=(), stride=unit_stride,
                width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame, factory=build)
'''
SPEC = """\
name: scaled
input: {channels: 3, height: 8, width: 8}
num_classes: 2
blocks:
  - {out_channels: 4, kernel_size: 3, padding: 1}
  - {kind: scale, init: 0.5}
  - kind: residual
    body: [{kind: scale}]
classifier: {hidden: [], dropout: 0}
"""
# what each case checks, in a fresh interpreter
CHECK = """\
import sys, torch
from builder import build_model, load_spec
from builder.lang.shapes import infer
from builder.tools.draw import draw
spec = load_spec(sys.argv[1])
model = build_model(spec)
assert sum(p.numel() for p in model.parameters()) == infer(spec).total_params == 112 + 4 + 4 + 256 * 2 + 2
assert torch.allclose(model.features.block2(torch.ones(1, 4, 2, 2)), torch.full((1, 4, 2, 2), 0.5))
assert "scale 0.5" in draw(spec, sys.argv[2]).read_text()
print("ok", [name for name, _ in model.features.named_children()])
"""


def _package(tmp_path: Path, entry_point: bool) -> Path:
    site = tmp_path / "site"
    (site / "scale_kind").mkdir(parents=True)
    (site / "scale_kind" / "__init__.py").write_text(PLUGIN)
    if entry_point:
        info = site / "scale_kind-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scale-kind\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[cnn_builder.block_kinds]\nscale = scale_kind:SCALE\n")
    return site


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=site, timeout=120)


@pytest.mark.slow
def test_an_entry_point_kind_validates_builds_and_draws(tmp_path: Path) -> None:
    site = _package(tmp_path, entry_point=True)
    (site / "spec.yaml").write_text(SPEC)
    done = _run(site, "-m", "builder", "validate", "spec.yaml")
    assert done.returncode == 0 and "OK: scaled, 3 blocks" in done.stdout, done.stderr
    done = _run(site, "-c", CHECK, "spec.yaml", str(tmp_path / "scaled.svg"))
    assert done.returncode == 0 and "ok ['block1', 'block2', 'block3']" in done.stdout, done.stderr


def test_a_package_found_twice_on_the_path_registers_its_kind_once(tmp_path: Path) -> None:
    site = _package(tmp_path, entry_point=True)
    (site / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(site), str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "builder", "validate", "spec.yaml"], capture_output=True, text=True,
                          env=env, cwd=site, timeout=120)
    assert done.returncode == 0 and "OK: scaled, 3 blocks" in done.stdout, done.stderr


@pytest.mark.slow
def test_register_kind_before_the_first_spec(tmp_path: Path) -> None:
    site = _package(tmp_path, entry_point=False)
    (site / "spec.yaml").write_text(SPEC)
    code = "import builder, scale_kind\nbuilder.register_kind(scale_kind.SCALE)\n" + CHECK
    done = _run(site, "-c", code, "spec.yaml", str(tmp_path / "scaled.svg"))
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr


@pytest.mark.parametrize("entry_point", [False, True])
def test_an_unregistered_kind_is_an_unknown_kind(tmp_path: Path, entry_point: bool) -> None:
    """Naming a module in YAML imports nothing: only installed code adds kinds."""
    site = _package(tmp_path, entry_point)
    (site / "spec.yaml").write_text(SPEC.replace("kind: scale, init", "kind: scael, init").replace(
        "{kind: scale}", "{kind: scale_kind:SCALE}"))
    done = _run(site, "-m", "builder", "validate", "spec.yaml")
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 2, done.stderr
    assert lines[0].startswith("spec.yaml:6:12: error: blocks[1].kind: unknown kind 'scael'; expected one of conv,")
    assert lines[0].endswith("; did you mean 'scale'?") == entry_point
    assert "blocks[2].body[0].kind: unknown kind 'scale_kind:SCALE'" in lines[1]


def test_a_broken_entry_point_is_one_error_line(tmp_path: Path) -> None:
    site = _package(tmp_path, entry_point=True)
    (site / "scale_kind" / "__init__.py").write_text("raise RuntimeError('boom')\n")
    (site / "spec.yaml").write_text(textwrap.dedent(SPEC))
    done = _run(site, "-m", "builder", "validate", "spec.yaml")
    assert done.returncode == 2 and done.stderr.splitlines() == [
        "error: entry point 'scale' of cnn_builder.block_kinds (scale_kind:SCALE) failed to load: RuntimeError: boom"]
