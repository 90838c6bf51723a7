"""export: ONNX matches PyTorch on every shipped spec (LRN included); TorchScript and pt2 keep a
dynamic batch; bad input is one line and exit 2; an existing file is never overwritten."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import SPECS, heavy_specs
from test_trainer import DIGITS_SPEC

from builder.lang.errors import SpecError
from builder.lang.loading import load_spec
from builder.model.build import build_model
from training.export import ONNX_TOLERANCE, export
from training.runinfo import load_run

Cli = Callable[..., tuple[int, str, str]]
SHIPPED = [p.name for p in heavy_specs()]  # every family; large variants are checked statically (conftest)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_onnx_matches_pytorch_on_every_shipped_spec(name: str, tmp_path: Path) -> None:
    # Narrow hidden layers keep the files small; every conv, pool and LRN layer is as shipped.
    try:
        spec = load_spec(SPECS / name, ["classifier.hidden=[64, 64]"])
    except SpecError:  # a spec whose classifier has no such field: as shipped
        spec = load_spec(SPECS / name)
    torch.manual_seed(0)
    difference = export(build_model(spec), spec, "onnx", tmp_path / "m.onnx")
    assert difference is not None and difference <= ONNX_TOLERANCE


@pytest.fixture
def run_dir(write_spec: Callable[..., Path], tmp_path: Path, cli: Cli) -> Path:
    assert cli("train", write_spec(DIGITS_SPEC), "--epochs", "1", "--out", tmp_path / "r", "--quiet")[0] == 0
    return tmp_path / "r"


def test_a_run_exports_to_every_format_with_a_dynamic_batch(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    model = load_run(run_dir, "best").model
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        want = model(x)
    code, stdout, _ = cli("export", run_dir, "--format", "onnx")
    assert code == 0 and "max abs difference" in stdout and (run_dir / "tiny_digits-best.onnx").is_file()
    code, _, _ = cli("export", run_dir, "--format", "torchscript", "--weights", "final", "-o", tmp_path / "m.ts")
    assert code == 0
    final = load_run(run_dir, "final").model
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(tmp_path / "m.ts"))(x), final(x), atol=1e-5)
    assert cli("export", run_dir, "--format", "pt2", "-o", tmp_path / "m.pt2")[0] == 0
    program = torch.export.load(str(tmp_path / "m.pt2"))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), want, atol=1e-5)


def test_export_bad_input_is_one_line_and_exit_2(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    code, _, stderr = cli("export", run_dir, "--format", "tflite")
    assert code == 2 and stderr.strip() == "error: --format tflite: unknown; expected onnx, torchscript, pt2"
    (tmp_path / "taken.onnx").write_bytes(b"mine")
    code, _, stderr = cli("export", run_dir, "--format", "onnx", "-o", tmp_path / "taken.onnx")
    assert code == 2 and "exists; pass --force to replace it" in stderr
    assert (tmp_path / "taken.onnx").read_bytes() == b"mine"
    code, _, stderr = cli("export", tmp_path / "nothing", "--format", "onnx")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
