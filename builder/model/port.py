"""Copy a state dict of another implementation (torchvision's alexnet) into a built model.

Tensors are matched by order and shape, not by name: the two implementations name their
layers differently but store them in the same order. One reshape is allowed: a Linear's
(out, in) weight fills a 1x1 convolution's (out, in, 1, 1) weight (the same map on every pixel:
ConvNeXt's channels-last Linears are built as 1x1 convs).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from builder.lang.errors import BuilderError


class PortError(BuilderError):
    """The source state dict does not line up with the model."""


def port_weights(model: nn.Module, source: Mapping[str, torch.Tensor]) -> list[tuple[str, str]]:
    """Copy `source` into `model` by order and shape; return the (source key, model key) pairs.

    Nothing is copied unless every tensor lines up; otherwise PortError lists each mismatch.
    """
    target = model.state_dict()
    theirs = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    ours = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    problems = [
        f"{tk} {tuple(tv.shape)} -> {ok} {tuple(ov.shape)}"
        for (tk, tv), (ok, ov) in zip(theirs, ours)
        if not lines_up(tv, ov)
    ]
    if len(theirs) != len(ours):
        problems.append(f"the source has {len(theirs)} tensors, the model {len(ours)}")
    if problems:
        raise PortError("weights do not match the model by order and shape: " + "; ".join(problems))
    with torch.no_grad():
        for (_, tv), (_, ov) in zip(theirs, ours):
            ov.copy_(tv.reshape(ov.shape))
    return [(tk, ok) for (tk, _), (ok, _) in zip(theirs, ours)]


def lines_up(theirs: torch.Tensor, ours: torch.Tensor) -> bool:
    """Equal shapes, or a Linear's (out, in) weight for a 1x1 conv's (out, in, 1, 1) weight."""
    return theirs.shape == ours.shape or (theirs.dim() == 2 and tuple(ours.shape) == (*theirs.shape, 1, 1))


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file loaded with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise BuilderError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or unsafe file: refuse, never execute it
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]  # a zero-byte file raises with no message
        raise BuilderError(f"{path}: cannot load weights safely: {reason}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BuilderError(f"{path}: not a state dict of tensors")
    return dict(state)
