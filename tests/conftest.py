"""Shared test helpers: small specs written to tmp_path, and the CLI run in-process."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "arch_specs"
HEAVY_LIMIT = 30_000_000  # parameters


def heavy_specs() -> list[Path]:
    """The shipped specs that tests build at full width, export and train: every family's own
    spec (one that extends no other) and every variant up to HEAVY_LIMIT parameters. A larger
    variant differs from its family's spec only in numbers (widths, depths, sizes), which the
    static checks over every spec (tests/test_zoo.py, the meta-device summary) cover; building,
    exporting and training each of them (regnet_y_128gf has 644 M parameters) would take the
    suite past its time on 2 cores."""
    import yaml

    from builder.lang.loading import load_spec
    from builder.lang.shapes import infer

    def heavy(path: Path) -> bool:
        own = "extends" not in (yaml.safe_load(path.read_text()) or {})
        return own or infer(load_spec(path)).total_params <= HEAVY_LIMIT

    return [p for p in sorted(SPECS.glob("*.yaml")) if heavy(p)]


def family_first(paths: list[Path]) -> list[Any]:
    """`paths` as parameters, a variant (a spec that extends another) marked slow: `make test`
    builds every family's own spec, `make test-all` and CI every variant too."""
    import yaml

    return [p if "extends" not in (yaml.safe_load(p.read_text()) or {}) else pytest.param(p, marks=pytest.mark.slow)
            for p in paths]
# Shipped specs that the per-spec build, train-step and export tests leave out: each takes minutes and
# GBs there (regnet_y_128gf: 645 M parameters), its structure is a smaller spec's it extends (tested),
# its counts are checked in test_zoo and its outputs by benchmarks/port_all.py.
TINY_SPEC = """\
name: tiny
input: {channels: 3, height: 16, width: 16}
num_classes: 4
blocks:
  - {out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}
  - {out_channels: 8, kernel_size: 3, padding: 1}
classifier: {hidden: [16], dropout: 0.1}
"""


# No batchnorm, dropout or augmentation, a constant lr: two ranks of half batches take one's steps.
DDP_SPEC = """\
name: ddp_tiny
input: {channels: 3, height: 12, width: 12}
num_classes: 4
blocks:
  - {out_channels: 6, kernel_size: 3, padding: 1, pool: {kind: max, kernel_size: 2, stride: 2}}
  - {out_channels: 8, kernel_size: 3, padding: 1}
classifier: {hidden: [16], dropout: 0.0}
training:
  dataset: {kind: fake, train_size: 64, test_size: 30, augment: {crop_padding: 0.0, hflip: false}}
  epochs: 2
  batch_size: 16
  optimizer: {kind: sgd, lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 0.0}
  schedule: {kind: constant}
  seed: 3
"""


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write dedented YAML text to tmp_path/NAME and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `python -m builder ARGS` in-process: (exit status, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
