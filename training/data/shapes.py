"""Synthetic segmentation data, offline and deterministic (in the spirit of MONAI's
create_test_image_2d): one to three shapes per image on a noisy background, each class one kind
of shape (disc, square, triangle, diamond, then again) in its own colour. The same seed gives
the same images and masks on every machine (NumPy's PCG64)."""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from builder.lang.spec import Spec
from training.config import ShapesData
from training.data.masks import MaskSplit
from training.data.splits import Source, to_channels
from training.errors import ConfigProblems

Region = Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (dy, dx, radius) -> bool (H, W)
SHAPES: tuple[tuple[str, Region], ...] = (
    ("disc", lambda dy, dx, r: dy * dy + dx * dx <= r * r),
    ("square", lambda dy, dx, r: np.maximum(np.abs(dy), np.abs(dx)) <= 0.85 * r),
    ("triangle", lambda dy, dx, r: (dy >= -r) & (dy <= 0.7 * r) & (np.abs(dx) <= 0.65 * (dy + r))),
    ("diamond", lambda dy, dx, r: np.abs(dy) + np.abs(dx) <= r),
)
BACKGROUND = (0.1, 0.1, 0.1)


def class_names(num_classes: int) -> tuple[str, ...]:
    """background, disc, square, triangle, diamond, disc_2, ..."""
    names = ["background"]
    for c in range(1, num_classes):
        shape, round_ = SHAPES[(c - 1) % len(SHAPES)][0], (c - 1) // len(SHAPES) + 1
        names.append(shape if round_ == 1 else f"{shape}_{round_}")
    return tuple(names)


def colours(num_classes: int) -> np.ndarray:
    """(classes, 3) RGB on a 0..1 scale: the background dark, the classes spread over the hues."""
    hues = [colorsys.hsv_to_rgb(c / (num_classes - 1), 0.8, 0.9) for c in range(num_classes - 1)]
    return np.array([BACKGROUND, *hues], dtype=np.float32)


def generate(count: int, size: tuple[int, int], num_classes: int, noise: float, seed: int) -> tuple[Tensor, Tensor]:
    """uint8 RGB images (N, 3, H, W) and uint8 masks (N, H, W) of class indices."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    palette = colours(num_classes)
    images = np.empty((count, h, w, 3), dtype=np.float32)
    masks = np.zeros((count, h, w), dtype=np.uint8)
    for i in range(count):
        image = np.broadcast_to(palette[0], (h, w, 3)).copy()
        for _ in range(int(rng.integers(1, 4))):
            cls = int(rng.integers(1, num_classes))
            r = float(rng.uniform(0.12, 0.25)) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            region = SHAPES[(cls - 1) % len(SHAPES)][1](yy - cy, xx - cx, r)
            masks[i][region], image[region] = cls, palette[cls]
        images[i] = image
    images += noise * rng.standard_normal(images.shape, dtype=np.float32)
    pixels = np.clip(images * 255 + 0.5, 0, 255).astype(np.uint8)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


def load(config: ShapesData, spec: Spec, workers: int = 0) -> Source:
    """train_size images from `seed`, test_size more from seed + 1, at the spec's input size."""
    names = class_names(config.num_classes)
    if config.classes is not None:
        if len(config.classes) != config.num_classes:
            raise ConfigProblems.at(("training", "dataset", "classes"), f"names {len(config.classes)} classes "
                                    f"but num_classes is {config.num_classes}")
        names = tuple(config.classes)
    size = (spec.input.height, spec.input.width)
    splits = []
    for count, seed in ((config.train_size, config.seed), (config.test_size, config.seed + 1)):
        images, masks = generate(count, size, config.num_classes, config.noise, seed)
        splits.append(MaskSplit(to_channels(images, spec.input.channels), masks))
    return Source("shapes", splits[0], None, splits[1], names)
