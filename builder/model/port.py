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

from builder.lang.errors import BuilderError, suggest

TV_KWARGS: dict[str, dict[str, object]] = {  # what makes torchvision's model the spec's
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
TOLERANCE = 1e-5  # relative to the reference's largest output
SHOWN = 3  # mismatches listed in full; the rest are counted


class PortError(BuilderError):
    """The source state dict does not line up with the model."""


class OutputsDiffer(BuilderError):
    """The ported model computes something else than the source model."""

    exit_code = 1


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
    if len(problems) > SHOWN:  # the first few say where it goes wrong; the rest follow from them
        problems[SHOWN:] = [f"and {len(problems) - SHOWN} more mismatched pairs"]
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


def torchvision_model(name: str, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """torchvision's model `name` (with TV_KWARGS) in eval mode, holding `state` if given, else
    random weights and random BatchNorm statistics (so a swapped mean and variance would show)."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        raise BuilderError(f"--torchvision {name}: not a torchvision classifier{suggest(name, names)}")
    model = torchvision.models.get_model(name, weights=None, **TV_KWARGS.get(name, {}))
    if state is None:
        randomize_norm_statistics(model)
    else:
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:  # missing or unexpected keys, wrong shapes: its first line says which
            raise BuilderError(f"--torchvision {name}: the weights do not fit: {str(exc).splitlines()[0]}") from None
    return model.eval()


def randomize_norm_statistics(model: nn.Module) -> None:
    """Random running means and variances, so that a swapped or missed buffer shows."""
    with torch.no_grad():
        for module in model.modules():
            mean, var = getattr(module, "running_mean", None), getattr(module, "running_var", None)
            if isinstance(module, nn.BatchNorm2d) and mean is not None and var is not None:
                mean.uniform_(-0.5, 0.5)
                var.uniform_(0.5, 2.0)


def output_difference(ours: nn.Module, reference: nn.Module, shape: tuple[int, int, int]) -> tuple[float, float]:
    """(max abs, max abs relative to the reference's largest output) on a random batch of 2 (eval mode)."""
    ours.eval()
    reference.eval()
    x = torch.randn(2, *shape)  # (N, C, H, W)
    with torch.no_grad():
        want = reference(x)
        diff = (ours(x) - want).abs().max().item()
    return diff, diff / max(want.abs().max().item(), 1e-12)
