"""Joint augmentation of images and their masks (training only), with torchvision.transforms.v2.

Geometric transforms (flips, rotation, zoom, shift) move an image and its mask together: the
image interpolated bilinearly, the mask with nearest neighbours (tv_tensors.Mask), so it keeps
class values; mask pixels the transform uncovers become ignore_index. Colour jitter touches the
image only. Each image draws its own transform; the draws come from the batch's generator
(through a seed for torch's RNG, forked and restored), so a resumed run repeats them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.config import SegmentationAugment
from training.data.augment import Preprocess


@dataclass(frozen=True)
class JointPreprocess(Preprocess):
    """Preprocess (resize, normalize) for segmentation; `pair` augments images and masks together."""

    joint: SegmentationAugment = SegmentationAugment()  # noqa: RUF009 - immutable (a frozen pydantic model)
    ignore_index: int = 255

    def pair(self, images: Tensor, labels: Tensor, rng: torch.Generator | None,
             flips: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """uint8 images (N, C, H, W) and int64 masks (N, H, W) -> normalized inputs and masks
        (`flips` is classification's alternating flip: the joint augment draws its own)."""
        if rng is not None:
            images, labels = augment_pairs(images, labels, transform(self.joint, self.ignore_index), rng)
        return self(images), labels


def transform(a: SegmentationAugment, ignore_index: int) -> Any:
    """The v2 pipeline of an augment section (the identity when everything is off)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    ops: list[Any] = []
    if a.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if a.vflip:
        ops.append(v2.RandomVerticalFlip())
    if a.rotate or a.translate or a.scale != [1.0, 1.0]:
        ops.append(v2.RandomAffine(
            degrees=a.rotate, translate=(a.translate, a.translate) if a.translate else None,
            scale=(a.scale[0], a.scale[1]) if a.scale != [1.0, 1.0] else None,
            interpolation=v2.InterpolationMode.BILINEAR, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
        ))
    if a.brightness or a.contrast or a.saturation:
        ops.append(v2.ColorJitter(brightness=a.brightness or None, contrast=a.contrast or None,
                                  saturation=a.saturation or None))
    return v2.Compose(ops)


def augment_pairs(images: Tensor, masks: Tensor, pipeline: Any, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """Each (image, mask) through `pipeline` with its own random draw, seeded from `rng`."""
    from torchvision import tv_tensors

    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pairs = [pipeline(tv_tensors.Image(x), tv_tensors.Mask(m)) for x, m in zip(images, masks)]
    return (torch.stack([p[0].as_subclass(Tensor) for p in pairs]),
            torch.stack([p[1].as_subclass(Tensor) for p in pairs]))
