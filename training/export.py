"""`export`: a run's model (or a spec's, randomly initialized) as ONNX, TorchScript or a
torch.export program (pt2), with a dynamic batch dimension; a per-pixel (segmentation) model's
ONNX file has a dynamic height and width too, where static inference shows that the spec takes
another size (its own plus the network's divisor, see training/segment.py).

The project's fast LocalResponseNorm is a custom autograd function that exporters cannot trace;
it is swapped for torch's nn.LocalResponseNorm (the same arguments and result) before export.
ONNX output is checked against PyTorch with onnxruntime on random input: at the spec's input
size, and for dynamic height and width at that second size as well.
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


def example(spec: Spec, batch: int, seed: int = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    h, w = size or (spec.input.height, spec.input.width)
    return torch.randn(batch, spec.input.channels, h, w, generator=gen)


def check_sizes(spec: Spec) -> list[tuple[int, int]]:
    """The input sizes the ONNX file is checked at: the spec's, and for a per-pixel model that
    takes other sizes a second one (each side plus the network's divisor). Two: height and width
    are dynamic."""
    from builder.lang.shapes import infer
    from training.segment import divisor, size_problem

    own = (spec.input.height, spec.input.width)
    head = infer(spec).head
    if head is None or len(head.out) != 3 or tuple(head.out[1:]) != own:
        return [own]
    step = divisor(spec)
    other = (own[0] + step[0], own[1] + step[1])
    return [own, other] if size_problem(spec, *other) is None else [own]


def dynamic_axes(sizes: list[tuple[int, int]]) -> dict[str, dict[int, str]]:
    axes = {0: "batch", 2: "height", 3: "width"} if len(sizes) > 1 else {0: "batch"}
    return {"images": axes, "logits": dict(axes)}


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
            sizes = check_sizes(spec)
            torch.onnx.export(model, (x,), buffer, input_names=["images"], output_names=["logits"],  # type: ignore[arg-type]
                              dynamic_axes=dynamic_axes(sizes), dynamo=False)
            return buffer.getvalue(), onnx_difference(model, spec, buffer.getvalue(), sizes)
        if fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, x)
            torch.jit.save(traced, buffer)
        else:
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
            torch.export.save(program, buffer)
    return buffer.getvalue(), None


def onnx_difference(model: nn.Module, spec: Spec, onnx_model: bytes,
                    sizes: list[tuple[int, int]] | None = None) -> float:
    """max |onnxruntime - PyTorch| over the logits of a random batch of CHECK_BATCH images at
    each of `sizes` (default: the spec's input size)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("the ONNX check needs onnxruntime: pip install -e '.[export]'") from None
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, size in enumerate(sizes or [(spec.input.height, spec.input.width)], start=1):
        x = example(spec, CHECK_BATCH, seed=seed, size=size)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        if got.shape != want.shape:
            raise ExportError(f"the ONNX model's output at {size[0]}x{size[1]} is {tuple(got.shape)}, "
                              f"PyTorch's {tuple(want.shape)}")
        worst = max(worst, float((got - want).abs().max()))
    return worst
