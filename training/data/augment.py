"""Per-batch preprocessing on tensors: resize, augmentation (training only), normalization.

Every random choice comes from a generator seeded by (seed, epoch[, step]), never from global
state, so a run stopped at any step resumes with exactly the same augmentations; alternating
flips follow each image's seeded phase and the epoch's parity (`flip_phases`). Segmentation
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


FLIP_STREAM = -1  # generator(seed, FLIP_STREAM): never a (seed, epoch, step) of a batch


def flip_phases(count: int, seed: int) -> Tensor:
    """hflip_mode alternate: whether each of `count` training images is flipped in even epochs (bool (count,))."""
    return torch.rand(count, generator=generator(seed, FLIP_STREAM)) < 0.5


def alternate_flips(phases: Tensor, indices: Tensor, epoch: int) -> Tensor:
    """The flips of the images `indices` in `epoch` (0-based): their phase, inverted in odd epochs."""
    return phases[indices] ^ bool(epoch % 2)


@dataclass(frozen=True)
class Preprocess:
    """uint8 (N, C, h, w) on the device -> normalized float (N, C, H, W), augmented if asked."""

    size: tuple[int, int]  # the spec's (H, W)
    mean: Tensor  # (C, 1, 1) on the device
    std: Tensor
    augment: Augment
    channels_last: bool = False

    def __call__(self, images: Tensor, rng: torch.Generator | None = None, flips: Tensor | None = None) -> Tensor:
        """`rng` (training): augment with the batch's own generator (CPU), so resume is exact;
        `flips`: which images to flip (bool (N,)) under hflip_mode alternate."""
        x = resize(images.float().div_(255), self.size)
        if rng is not None:
            x = random_crop(x, self.padding, rng, self.augment.padding_mode)
            if self.augment.hflip and self.augment.hflip_mode == "alternate":
                if flips is None:
                    raise ValueError("hflip_mode alternate needs each image's flip (augment.alternate_flips)")
                x = flip_where(x, flips)
            elif self.augment.hflip:
                x = random_hflip(x, rng)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def pair(self, images: Tensor, labels: Tensor, rng: torch.Generator | None,
             flips: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """A training batch: the images preprocessed (augmented with `rng` and `flips`), the labels as they are."""
        return self(images, rng, flips), labels

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


def random_crop(x: Tensor, padding: tuple[int, int], rng: torch.Generator, mode: str = "zeros") -> Tensor:
    """Each image shifted by up to `padding` (rows, columns) pixels each way, the gap zero-filled
    (mode zeros) or the image mirrored at its edges (reflect, at most size - 1 pixels)."""
    n, c, h, w = x.shape
    ph, pw = (min(padding[0], h - 1), min(padding[1], w - 1)) if mode == "reflect" else padding
    if ph == pw == 0:
        return x
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect") if mode == "reflect" else F.pad(x, (pw, pw, ph, ph))
    dy = torch.randint(0, 2 * ph + 1, (n, 1), generator=rng).to(x.device)
    dx = torch.randint(0, 2 * pw + 1, (n, 1), generator=rng).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(x: Tensor, rng: torch.Generator) -> Tensor:
    return flip_where(x, torch.rand(x.shape[0], generator=rng) < 0.5)


def flip_where(x: Tensor, flips: Tensor) -> Tensor:
    """The images of (N, C, H, W) `x` mirrored left-right where `flips` (bool (N,), any device) is true."""
    return torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
