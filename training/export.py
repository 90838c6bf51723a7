"""`export`: a run's model (or a spec's, randomly initialized) as ONNX, TorchScript or a
torch.export program (pt2), with a dynamic batch dimension.

The project's fast LocalResponseNorm is a custom autograd function that exporters cannot trace;
it is swapped for torch's nn.LocalResponseNorm (the same arguments and result) before export.
ONNX output is checked against PyTorch with onnxruntime on random input.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from builder.lang.errors import BuilderError
from builder.lang.files import write_bytes
from builder.lang.spec import Spec
from builder.model.lrn import LocalResponseNorm

Format = Literal["onnx", "torchscript", "pt2"]
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".ts.pt", "pt2": ".pt2"}
ONNX_TOLERANCE = 1e-4  # max abs difference of the logits, onnxruntime vs PyTorch
CHECK_BATCH = 3  # not the batch exported with (2), so the dynamic dimension is exercised


class ExportError(BuilderError):
    """An export that failed or does not match PyTorch (exit 1)."""

    exit_code = 1


def standard_ops(model: nn.Module) -> nn.Module:
    """The model with every fast LocalResponseNorm replaced by torch's (in place)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LocalResponseNorm):
                setattr(module, name, nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
    return model


def example(spec: Spec, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, spec.input.channels, spec.input.height, spec.input.width, generator=gen)


def export(model: nn.Module, spec: Spec, fmt: Format, path: Path, *, replace: bool = True) -> float | None:
    """Write `model` (eval mode) to `path`; for ONNX return the max abs difference to PyTorch.
    The file appears only when complete (serialized in memory, then written atomically);
    `replace=False`: a file another command put at `path` meanwhile stays (WriteError)."""
    try:
        data, difference = _export(standard_ops(model).eval(), spec, fmt)
    except ExportError:
        raise
    except Exception as exc:  # exporters fail in many ways; the first line says which
        raise ExportError(f"{fmt} export failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None
    write_bytes(path, data, replace=replace)
    return difference


def _export(model: nn.Module, spec: Spec, fmt: Format) -> tuple[bytes, float | None]:
    x, buffer = example(spec, 2), io.BytesIO()
    with warnings.catch_warnings():  # exporters warn about their own internals
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(model, (x,), buffer, input_names=["images"], output_names=["logits"],  # type: ignore[arg-type]
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            return buffer.getvalue(), onnx_difference(model, spec, buffer.getvalue())
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, x)
            torch.jit.save(traced, buffer)
        else:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
            torch.export.save(program, buffer)
    return buffer.getvalue(), None


def onnx_difference(model: nn.Module, spec: Spec, onnx_model: bytes) -> float:
    """max |onnxruntime - PyTorch| over the logits of a random batch of CHECK_BATCH images."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("the ONNX check needs onnxruntime: pip install -e '.[export]'") from None
    x = example(spec, CHECK_BATCH, seed=1)
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    return float((got - want).abs().max())
