"""Local response normalization across channels: nn.LocalResponseNorm's result, faster on CPU.

    b_c = a_c * d_c ** -beta,   d_c = k + alpha / size * sum(a_j ** 2 for j in W(c))

with the window W(c) = [c - size//2, c + (size-1)//2] clipped to the channels (torch zero-pads
the same way). torch builds the window sum from a padded copy of a**2 through avg_pool3d and lets
autograd keep every intermediate; here d is `size` fused multiply-adds of channel slices of the
input (no squares tensor, no padded copy) and the backward is written out by hand:

    dL/da_j = g_j * d_j**-beta - 2 * alpha * beta / size * a_j * sum(u_c for c in W'(j)),
    u_c = g_c * a_c * d_c ** (-beta - 1),   W'(j) = [j - (size-1)//2, j + size//2]

so a training step makes fewer passes over memory and fewer large allocations (which page-fault
on CPU). It runs in any floating dtype (bfloat16 on CPU too, where avg_pool3d has no kernel; the
sum is then accumulated in bfloat16, within a few bf16 roundings of the float32 result), in either
memory format and on "meta". Measured against torch's in benchmarks/bench_lrn.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

Shift = tuple[int, int, int]  # (first, end, offset): channels first..end-1 take channel c + offset


def _shifts(channels: int, before: int, after: int) -> list[Shift]:
    """The non-zero offsets of a window [c - before, c + after], clipped to the channels.

    Offsets of `channels` or more reach no channel, so the work is at most 2 * channels slices
    whatever `size` is (a validated size of 10**12 must not loop 10**12 times).
    """
    out = []
    for offset in range(-min(before, channels - 1), min(after, channels - 1) + 1):
        if offset != 0:
            out.append((max(0, -offset), channels - max(0, offset), offset))
    return out


def _denominator(x: Tensor, size: int, alpha: float, k: float) -> Tensor:
    """d = k + alpha/size * (window sum of x**2 over channels), shape of x (N, C, ...)."""
    scale = alpha / size
    d = torch.addcmul(x.new_full((), k), x, x, value=scale)  # the centre term, and a fresh tensor
    for first, end, offset in _shifts(x.shape[1], size // 2, (size - 1) // 2):
        near = x[:, first + offset : end + offset]
        d[:, first:end].addcmul_(near, near, value=scale)
    return d


class _LRNFunction(torch.autograd.Function):
    """Saves x, d and r = d**-beta (recomputing r in backward measured slower, most in bf16)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
        d = _denominator(x, size, alpha, k)
        if not ctx.needs_input_grad[0]:  # inference: the output may reuse d's memory
            return d.pow_(-beta).mul_(x)
        r = d.pow(-beta)
        ctx.save_for_backward(x, d, r)
        ctx.hyper = (size, alpha, beta)
        return x * r

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, d, r = ctx.saved_tensors
        size, alpha, beta = ctx.hyper
        out = grad * r  # the direct term g * d**-beta; becomes the result
        u = (out * x).div_(d)  # g * x * d**(-beta-1), summed over the transposed window below
        coef = -2.0 * alpha * beta / size
        out.addcmul_(x, u, value=coef)  # centre of the window
        for first, end, offset in _shifts(x.shape[1], (size - 1) // 2, size // 2):
            out[:, first:end].addcmul_(x[:, first:end], u[:, first + offset : end + offset], value=coef)
        return out, None, None, None, None


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> Tensor:
    """Functional form; same arguments and result as torch.nn.functional.local_response_norm."""
    if x.dim() < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {x.dim()} dimensions)")
    if x.numel() == 0:
        return x
    out: Tensor = _LRNFunction.apply(x, size, alpha, beta, k)
    return out


class LocalResponseNorm(nn.Module):
    """Drop-in for nn.LocalResponseNorm (same arguments, repr and result); no parameters or buffers."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
