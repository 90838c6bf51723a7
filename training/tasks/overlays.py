"""Pictures of masks: class colours, overlays on the image, and image | truth | prediction strips.

All on uint8 tensors: images (N, C, H, W) with C 1 or 3, masks (N, H, W) of class indices.
Colours come from the run's palette (one RGB per class); pixels that are no class (ignore_index)
get IGNORED, the colour PASCAL VOC gives its unlabelled border.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

IGNORED = (224, 224, 192)
ALPHA = 0.5  # the class colour's share of an overlay pixel
GAP = 2  # pixels of white between the pictures of a strip


def colour(masks: Tensor, palette: Sequence[Sequence[int]]) -> Tensor:
    """uint8 (N, 3, H, W): each pixel its class's colour (IGNORED outside 0..classes-1)."""
    table = torch.tensor([*map(list, palette), IGNORED], dtype=torch.uint8, device=masks.device)
    n = len(palette)
    index = torch.where((masks >= 0) & (masks < n), masks, n).long()
    return table[index].permute(0, 3, 1, 2).contiguous()


def rgb(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W): a grayscale batch repeated to three channels."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def overlay(images: Tensor, masks: Tensor, palette: Sequence[Sequence[int]]) -> Tensor:
    """uint8 (N, 3, H, W): the image with every pixel of a class other than 0 (the background)
    blended ALPHA with its colour; background pixels as they are."""
    base = rgb(images).float()
    painted = (1 - ALPHA) * base + ALPHA * colour(masks, palette).float()
    shown = (masks != 0).unsqueeze(1)
    return torch.where(shown, painted, base).round_().clamp_(0, 255).to(torch.uint8)


def strips(images: Tensor, truth: Tensor, predicted: Tensor, palette: Sequence[Sequence[int]]) -> Tensor:
    """uint8 (3, H', W'): one row per image, image | true mask | predicted mask in class colours,
    as the reference U-Net saves them while it trains (TensorBoard's picture)."""
    shown, true, found = rgb(images), colour(truth, palette), colour(predicted, palette)
    rows = [_stack([shown[i], true[i], found[i]], dim=2) for i in range(len(images))]
    return _stack(rows, dim=1)


def _stack(pictures: list[Tensor], dim: int) -> Tensor:
    """(3, h, w) pictures joined along `dim` (1: rows, 2: columns) with GAP white pixels between."""
    shape = list(pictures[0].shape)
    shape[dim] = GAP
    gap = torch.full(shape, 255, dtype=torch.uint8, device=pictures[0].device)
    parts: list[Tensor] = []
    for i, picture in enumerate(pictures):
        parts += [gap, picture] if i else [picture]
    return torch.cat(parts, dim=dim)
