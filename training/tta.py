"""Test-time augmentation: a classifier's logits averaged over views of each preprocessed image.

The views and their weights are airbench94's: with `translate: t`, the image (weight 1/2) and
the image shifted by t pixels down-right and up-left (1/4 each), the gap filled by `padding_mode`;
with `hflip`, each of those and its mirror, halving every weight. The weighted mean is the
expectation of the logits when each view is drawn with its weight (float32).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from training.config import TTAConfig

Forward = Callable[[Tensor], Tensor]


def views(x: Tensor, tta: TTAConfig) -> list[tuple[float, Tensor]]:
    """(weight, view) of a normalized batch (N, C, H, W); the weights sum to 1."""
    t = tta.translate
    found = [(1.0, x)] if t == 0 else [(0.5, x), (0.25, shifted(x, t, tta.padding_mode)),
                                       (0.25, shifted(x, -t, tta.padding_mode))]
    if tta.hflip:
        return [(w / 2, v) for weight, view in found for w, v in ((weight, view), (weight, view.flip(3)))]
    return found


def shifted(x: Tensor, t: int, mode: str) -> Tensor:
    """x moved t pixels down and right (t < 0: up and left): view[i, j] = x[i - t, j - t], padded by `mode`."""
    h, w, a = x.shape[-2], x.shape[-1], abs(t)
    padded = F.pad(x, (a, a, a, a), mode=mode)
    top = a - t  # t > 0: the padding's first row lands on the view's first row
    return padded[..., top : top + h, top : top + w]


def tta_forward(forward: Forward, tta: TTAConfig | None) -> Forward:
    """forward itself without TTA, else the weighted mean of forward over the views (float32)."""
    if tta is None:
        return forward

    def averaged(x: Tensor) -> Tensor:
        total: Tensor | None = None
        for weight, view in views(x, tta):
            out = forward(view).float() * weight
            total = out if total is None else total + out
        assert total is not None  # there is always the image itself
        return total

    return averaged


def check_tta(tta: TTAConfig | None, size: tuple[int, int]) -> None:
    """A shift must be smaller than the input (H, W): one located line otherwise."""
    if tta is not None and tta.translate >= min(size):
        from training.errors import ConfigProblems

        raise ConfigProblems.at(("training", "tta", "translate"), (
            f"shifts by {tta.translate} pixels, but the spec's input is {size[0]}x{size[1]}: use at most "
            f"{min(size) - 1}"))
