"""The two modules a plain nn.Sequential cannot express: a residual add and parallel branches.

Children are registered in forward order (body before shortcut, branch1 before branch2), so
parameters are stored in the order torchvision stores them, which `port-weights` relies on.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

# Layers whose backward never reads their own output, so it may be overwritten in place.
OUTPUT_NOT_SAVED = (nn.Conv2d, nn.BatchNorm2d)


class Residual(nn.Module):
    """out = act(drop(layer_scale * body(x)) + shortcut(x)); without a shortcut, out = act(body(x))
    (no add). `drop` is stochastic depth (identity in eval mode), None for none; `layer_scale` a
    learnable (C, 1, 1) factor (see scale_by), absent by default.

    A parameter of the block itself precedes its children's in the state dict, as torchvision's
    CNBlock.layer_scale precedes its `block`, so port-weights lines up by order."""

    layer_scale: nn.Parameter | None

    def __init__(self, body: nn.Sequential, shortcut: nn.Module | None, act: nn.Module | None,
                 drop: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut  # nn.Identity, a projection, or None when the block does not add
        self.act = act
        self.stochastic_depth = drop
        self.layer_scale = None
        # Add in place (as torchvision's ResNet does: no new tensor per block) only when the body
        # ends in a fresh tensor that its backward does not need; after an in-place activation
        # (whose output ReLU's backward reads) or an empty body (out is x) it must not.
        last = _last_leaf(body)
        self.add_inplace = last is not None and isinstance(last, OUTPUT_NOT_SAVED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.layer_scale is not None:
            out = self.layer_scale * out  # (C, 1, 1) * (N, C, H, W): a fresh tensor, safe to add to in place
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out)  # in training a fresh tensor (out * mask), else out itself
        if self.shortcut is not None:
            shortcut = self.shortcut(x)
            out = out.add_(shortcut) if self.add_inplace else out + shortcut
        return out if self.act is None else self.act(out)


    def scale_by(self, channels: int, value: float) -> None:
        """Add layer scale: a learnable factor per channel of the body's output, initially `value`."""
        self.layer_scale = nn.Parameter(torch.full((channels, 1, 1), value))
        self.add_inplace = True


class StochasticDepth(nn.Module):
    """Drops whole samples with probability p while training, scaling the kept ones by 1 / (1 - p);
    the identity in eval mode. torchvision.ops.StochasticDepth(p, mode="row"), with the same random
    draws, without importing torchvision (seconds) for every build."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask.div_(keep)  # (N, 1, 1, 1): one draw per sample

    def extra_repr(self) -> str:
        return f"p={self.p}, mode=row"


def _last_leaf(module: nn.Module) -> nn.Module | None:
    """The module that runs last in a chain of nested nn.Sequential (None when one is empty)."""
    while isinstance(module, nn.Sequential):
        if len(module) == 0:
            return None
        module = module[-1]
    return module


class Parallel(nn.Module):
    """Branches (branch1, branch2, ...) on the same input, concatenated along channels, added or
    multiplied (a 1x1 output broadcast over H x W)."""

    def __init__(self, branches: list[nn.Sequential], merge: Literal["concat", "add", "mul"]) -> None:
        super().__init__()
        for k, branch in enumerate(branches, start=1):
            self.add_module(f"branch{k}", branch)
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return merged([branch(x) for branch in self.children()], self.merge)

    def extra_repr(self) -> str:
        return f"merge={self.merge}"


def merged(outs: list[torch.Tensor], merge: str) -> torch.Tensor:
    """(N, C_k, H, W) per branch -> (N, sum C_k, H, W) (concat), or their sum (add) or product (mul)."""
    if merge == "concat":
        return torch.cat(outs, dim=1)
    total = outs[0]
    for out in outs[1:]:
        total = total * out if merge == "mul" else total + out
    return total


class Gate(nn.Module):
    """Squeeze-excitation, x * scale_activation(fc2(activation(fc1(avgpool(x))))): torchvision's
    SqueezeExcitation, with its children's names and order (so port-weights lines up)."""

    def __init__(self, channels: int, squeeze: int, act: nn.Module, scale_act: nn.Module) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = act
        self.scale_activation = scale_act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, 1, 1) factors, broadcast over H and W
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def channels_last_view(x: torch.Tensor) -> bool:
    """Whether x is (N, C, H, W) over memory laid out (N, H, W, C), as Pointwise and LayerNorm2d leave it."""
    return x.dim() == 4 and x.stride(1) == 1 and not x.is_contiguous()


class Pointwise(nn.Conv2d):
    """A 1x1 conv (stride 1, no padding, one group). On a channels-last view of (N, C, H, W), as
    LayerNorm2d leaves it, it runs as nn.Linear over the channels, the GEMM that torchvision's
    ConvNeXt runs (its MLP is Linear on NHWC); measured faster there than mkldnn's conv. Any
    other input takes nn.Conv2d's path. Both compute the same sums; the weight stays (out, in, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if channels_last_view(x):  # (N, C, H, W) with C innermost
            out = nn.functional.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias)  # (N, H, W, out)
            return out.permute(0, 3, 1, 2)
        return super().forward(x)


class GELU(nn.GELU):
    """nn.GELU that runs on a channels-last view's own (N, H, W, C) layout: the same values, but
    torch's kernels take that view 18% slower than the contiguous tensor it views (ConvNeXt's MLP
    applies GELU between two Pointwise layers, where torchvision applies it on NHWC)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if channels_last_view(x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels at each pixel of (N, C, H, W), as torchvision's ConvNeXt:
    channels last, layer_norm over C, channels first again (weight and bias of C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class SplitParallel(Parallel):
    """Parallel branches, each on its own chunk of the input channels, in order: x.chunk(n, dim=1),
    or x.split(sizes, dim=1) when `sizes` are given."""

    def __init__(self, branches: list[nn.Sequential], merge: Literal["concat", "add", "mul"],
                 sizes: list[int] | None = None) -> None:
        super().__init__(branches, merge)
        self.sizes = sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> n chunks (N, C_k, H, W), branch k on chunk k
        parts = x.chunk(len(self._modules), dim=1) if self.sizes is None else x.split(self.sizes, dim=1)
        return merged([branch(part) for branch, part in zip(self.children(), parts)], self.merge)

    def extra_repr(self) -> str:
        return f"merge={self.merge}" + (f", sizes={self.sizes}" if self.sizes is not None else "")


class ChannelShuffle(nn.Module):
    """torchvision's channel_shuffle: (N, g, C/g, H, W) transposed to (N, C/g, g, H, W), flattened back."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class Skip(nn.Module):
    """out = merge(x, body(x)) with the sizes fitted by `match` (builder.lang.kinds.skip)."""

    def __init__(self, body: nn.Sequential, merge: Literal["concat", "add", "none"],
                 match: Literal["exact", "resize", "pad", "crop"]) -> None:
        super().__init__()
        self.body = body
        self.merge = merge
        self.match = match

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.match == "resize" and (out.shape[-2:] != x.shape[-2:] or torch.jit.is_tracing()):
            # as the reference U-Net's TF.resize of a tensor (bilinear; antialias only acts when shrinking)
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        elif self.match in ("pad", "crop"):
            x, out = _fit(x, out, self.match), _fit(out, x, self.match)
        if self.merge == "concat":
            return torch.cat([x, out], dim=1)  # (N, C_x + C_body, H, W): the skip first
        return x + out if self.merge == "add" else out

    def extra_repr(self) -> str:
        return f"merge={self.merge}, match={self.match}"


def _fit(t: torch.Tensor, other: torch.Tensor, match: str) -> torch.Tensor:
    """`t` zero-padded (pad) or cropped (crop), centred, to `other`'s size along each axis where
    that makes it larger (pad) or smaller (crop); the odd pixel goes to the bottom and right."""
    dh, dw = other.shape[-2] - t.shape[-2], other.shape[-1] - t.shape[-1]
    if match == "pad":
        dh, dw = max(dh, 0), max(dw, 0)
        return F.pad(t, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2]) if dh or dw else t
    dh, dw = max(-dh, 0), max(-dw, 0)
    return t[..., dh // 2:t.shape[-2] - (dh - dh // 2), dw // 2:t.shape[-1] - (dw - dw // 2)]


class ResizedToInput(nn.Sequential):
    """features -> head, the output resized to the input's size: torchvision's FCN and DeepLab
    (F.interpolate to input.shape[-2:], bilinear without align_corners). Children as nn.Sequential's."""

    def __init__(self, parts: OrderedDict[str, nn.Module], mode: Literal["bilinear", "nearest"]) -> None:
        super().__init__(parts)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        corners = False if self.mode == "bilinear" else None
        return F.interpolate(out, size=x.shape[-2:], mode=self.mode, align_corners=corners)

    def extra_repr(self) -> str:
        return f"resize to the input: {self.mode}"


class WhiteningConv2d(nn.Conv2d):
    """conv init whiten: filters that whiten the conv's input, set by fit() (the trainer calls it
    on training images before the first step) and never trained; the bias trains as usual."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, inputs: torch.Tensor, eps: float = 5e-4) -> None:
        """Each eigenvector of the (uncentered) covariance of the kh x kw patches of `inputs`
        (N, C, H, W), scaled by 1 / sqrt(its eigenvalue + eps), then the same negated: out_channels
        = 2 x C x kh x kw filters, largest eigenvalue first (airbench94's first layer)."""
        c, (kh, kw) = self.in_channels, self.kernel_size
        patches = F.unfold(inputs.float(), (kh, kw), dilation=self.dilation).transpose(1, 2).reshape(-1, c * kh * kw)
        # the (C*kh*kw)^2 covariance is decomposed on the CPU: MPS has no eigh, and it is tiny
        values, vectors = torch.linalg.eigh((patches.T @ patches / len(patches)).cpu(), UPLO="U")
        values, vectors = values.flip(0).view(-1, 1, 1, 1), vectors.T.reshape(-1, c, kh, kw).flip(0)
        scaled = vectors / torch.sqrt(values + eps)
        self.weight.copy_(torch.cat((scaled, -scaled)).to(self.weight.device, self.weight.dtype))


def dirac_first(conv: nn.Conv2d) -> None:
    """conv init dirac: the first in_channels filters pass their input channel through (a 1 at the
    kernel's centre), the others keep their initialization (airbench's convs)."""
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: conv.in_channels])


class Scale(nn.Module):
    """x * factor, a fixed number (the classifier's `scale`: airbench's logits x 1/9)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"
