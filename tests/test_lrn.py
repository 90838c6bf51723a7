"""builder.model.lrn.LocalResponseNorm against torch's: values, input gradients, dtypes, layouts, meta."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from builder.model.lrn import LocalResponseNorm


def _pair(size: int, seed: int) -> tuple[LocalResponseNorm, nn.LocalResponseNorm]:
    """Ours and torch's with the same random alpha, beta and k."""
    g = torch.Generator().manual_seed(seed)
    alpha, beta, k = (float(v) for v in torch.rand(3, generator=g) * torch.tensor([2.0, 1.5, 2.0]) + 0.1)
    return LocalResponseNorm(size, alpha, beta, k), nn.LocalResponseNorm(size, alpha, beta, k)


def _forward_backward(m: nn.Module, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient for upstream gradient g."""
    x = x.detach().requires_grad_()
    y = m(x)
    y.backward(g)
    assert x.grad is not None
    return y.detach(), x.grad


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("channels", [1, 3, 8, 16])
def test_matches_torch_forward_and_input_grad(size: int, channels: int) -> None:
    ours, theirs = _pair(size, seed=size * 100 + channels)
    gen = torch.Generator().manual_seed(channels)
    x = torch.randn(3, channels, 5, 6, generator=gen) * 2
    g = torch.randn(x.shape, generator=gen)
    y, gx = _forward_backward(ours, x, g)
    y_ref, gx_ref = _forward_backward(theirs, x, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [2, 5])
def test_channels_last_input(size: int) -> None:
    ours, theirs = _pair(size, seed=7)
    x = torch.relu(torch.randn(2, 12, 7, 7) * 5).contiguous(memory_format=torch.channels_last)
    g = torch.randn(x.shape).contiguous(memory_format=torch.channels_last)
    y, gx = _forward_backward(ours, x, g)
    y_ref, gx_ref = _forward_backward(theirs, x.contiguous(), g.contiguous())
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)


def test_alexnet_settings_and_inference_path() -> None:
    ours, theirs = LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    x = torch.relu(torch.randn(2, 96, 9, 9) * 50)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_3d_and_5d_inputs_like_torch() -> None:
    ours, theirs = _pair(3, seed=3)
    for shape in [(2, 6, 10), (2, 6, 3, 4, 5)]:
        x = torch.randn(shape)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3D or higher"):
        ours(torch.randn(4, 6))


def test_bfloat16_runs_and_is_close_to_float32() -> None:
    ours, theirs = LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    x = (torch.relu(torch.randn(2, 16, 8, 8)) * 30).bfloat16()  # exactly representable in both
    g = torch.randn(x.shape).bfloat16()
    y, gx = _forward_backward(ours, x, g)
    y_ref, gx_ref = _forward_backward(theirs, x.float(), g.float())
    assert y.dtype == gx.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), y_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx.float(), gx_ref, rtol=2e-2, atol=2e-2)


def test_under_bfloat16_autocast() -> None:
    conv, lrn = nn.Conv2d(3, 8, 3), LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = lrn(torch.relu(conv(torch.randn(2, 3, 9, 9))))
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_meta_tensors_give_the_shape() -> None:
    x = torch.empty(4, 96, 55, 55, device="meta", requires_grad=True)
    y = LocalResponseNorm(5)(x)
    assert y.device.type == "meta" and y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


@pytest.mark.parametrize("size", [2, 3, 5])
def test_gradcheck_float64(size: int) -> None:
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(size, alpha=0.5, beta=0.75, k=1.5)
    assert torch.autograd.gradcheck(lrn, (x,), eps=1e-6, atol=1e-8)


def test_repr_and_no_state() -> None:
    ours = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    assert repr(ours) == repr(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
    assert ours.state_dict() == {} and type(ours).__name__ == "LocalResponseNorm"


@pytest.mark.parametrize(("size", "channels"), [(9, 4), (16, 5), (40, 8)])
def test_windows_wider_than_the_channels_match_torch(size: int, channels: int) -> None:
    ours, theirs = _pair(size, seed=size + channels)
    x = torch.randn(2, channels, 3, 3, generator=torch.Generator().manual_seed(size))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(channels))
    y, gx = _forward_backward(ours, x, g)
    y_ref, gx_ref = _forward_backward(theirs, x, g)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)


def test_cost_does_not_grow_with_a_huge_size() -> None:
    # size 10**12 validates (a positive int); the window covers every channel, so
    # d = k + alpha/size * sum over all channels of x**2 -- computed without looping 10**12 times.
    size, alpha, beta, k = 10**12, 1e9, 0.75, 1.0
    x = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    y = LocalResponseNorm(size, alpha, beta, k)(x)
    d = k + alpha / size * (x * x).sum(dim=1, keepdim=True)
    torch.testing.assert_close(y, x * d**-beta)
    y.sum().backward()  # the backward's window is bounded the same way
    assert x.grad is not None and torch.isfinite(x.grad).all()
