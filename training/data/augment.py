"""Per-batch preprocessing on tensors: resize, augmentation (training only), normalization.

Every random choice comes from a generator seeded by (seed, epoch[, step]), never from global
state, so a run stopped at any step resumes with exactly the same augmentations. Segmentation
batches are augmented jointly with their masks (training/data/joint.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from training.config import Augment


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (seed, epoch, step), with no collisions in practice."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


@dataclass(frozen=True)
class Preprocess:
    """uint8 (N, C, h, w) on the device -> normalized float (N, C, H, W), augmented if asked."""

    size: tuple[int, int]  # the spec's (H, W)
    mean: Tensor  # (C, 1, 1) on the device
    std: Tensor
    augment: Augment
    channels_last: bool = False

    def __call__(self, images: Tensor, rng: torch.Generator | None = None) -> Tensor:
        x = resize(images.float().div_(255), self.size)
        if rng is not None:  # training: the batch's own generator (CPU), so resume is exact
            x = random_crop(x, self.padding, rng)
            x = random_hflip(x, rng) if self.augment.hflip else x
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def pair(self, images: Tensor, labels: Tensor, rng: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """A training batch: the images preprocessed (augmented with `rng`), the labels as they are."""
        return self(images, rng), labels

    @property
    def padding(self) -> tuple[int, int]:
        """The crop padding in pixels, (top/bottom, left/right), rounded half up."""
        fraction = self.augment.crop_padding
        return int(fraction * self.size[0] + 0.5), int(fraction * self.size[1] + 0.5)


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of a float batch; antialiased when shrinking."""
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def random_crop(x: Tensor, padding: tuple[int, int], rng: torch.Generator) -> Tensor:
    """Each image shifted by up to `padding` (rows, columns) pixels each way, the gap zero-filled."""
    ph, pw = padding
    if ph == pw == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (pw, pw, ph, ph))
    dy = torch.randint(0, 2 * ph + 1, (n, 1), generator=rng).to(x.device)
    dx = torch.randint(0, 2 * pw + 1, (n, 1), generator=rng).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x: Tensor, rng: torch.Generator) -> Tensor:
    flip = (torch.rand(x.shape[0], generator=rng) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(3), x)
