"""Splits of a dataset and what a run needs of them: batches in a given order, labels, subsets.

A split yields batches of uint8 images (N, C, h, w) with C already the spec's channel count
(gray <-> RGB converted once) and int64 labels (N,). Two kinds: `TensorSplit` holds its images
decoded in memory; `FolderSplit` decodes image files per batch in DataLoader workers.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import IO, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from training.errors import BadImageError

Batch = tuple[Tensor, Tensor]  # uint8 images (N, C, h, w), int64 labels (N,)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")
STATS_SAMPLE = 512  # images of a split decoded per batch that estimate its mean and std
# The image files decoded (image folders, predict), by extension and as Pillow's format: the formats
# the docs list, and no other (Pillow would otherwise pick a plugin from the contents).
IMAGE_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}
IMAGE_FORMATS = tuple(dict.fromkeys(IMAGE_EXTENSIONS.values()))


class Split(Protocol):
    """One part of a dataset (train, val or test) that yields batches in a given order."""

    def __len__(self) -> int: ...

    def batches(self, order: Sequence[Tensor]) -> Iterator[Batch]: ...

    @property
    def targets(self) -> Tensor: ...

    def subset(self, indices: Tensor) -> Split: ...


@dataclass(frozen=True)
class TensorSplit:
    """A split held in memory: uint8 images (N, C, h, w) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, order: Sequence[Tensor]) -> Iterator[Batch]:
        for index in order:
            index = index.to(self.images.device)  # gather where the images are (a GPU after on_device)
            yield self.images[index], self.labels[index]

    @property
    def targets(self) -> Tensor:
        return self.labels.cpu()

    def subset(self, indices: Tensor) -> TensorSplit:
        return TensorSplit(self.images[indices], self.labels[indices])


class DecodedImages(Dataset[tuple[Tensor, int]]):
    """(path, label) samples decoded to uint8 (C, H, W) at the spec's size, in `mode` (L or RGB)."""

    def __init__(self, samples: Sequence[tuple[str, int]], mode: str, size: tuple[int, int]) -> None:
        self.samples, self.mode, self.size = list(samples), mode, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return decode_image(path, self.mode, self.size), label


def decode_image(path: str, mode: str, size: tuple[int, int] | None) -> Tensor:
    """One image file -> uint8 (C, H, W) in `mode` (L or RGB), bilinear-resized to `size` (H, W);
    None: at its own size (segmentation's predict).

    Only regular files are opened (a FIFO would block), and only as IMAGE_FORMATS: Pillow never
    tries its other plugins on the contents (a PostScript file named photo.png would reach EPS,
    which runs Ghostscript)."""
    from PIL import Image

    try:
        with _open_regular(path) as f, Image.open(f, formats=IMAGE_FORMATS) as file:
            img = file.convert(mode)
        height, width = size or (img.height, img.width)
        img = img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BILINEAR)
    except Image.UnidentifiedImageError:
        raise BadImageError(f"{path}: cannot read image: not a {', '.join(IMAGE_FORMATS)} image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImageError(f"{path}: cannot read image: {exc}") from None
    array = np.asarray(img, dtype=np.uint8).reshape(height, width, -1)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def _open_regular(path: str) -> IO[bytes]:
    """The file opened for reading, once its descriptor shows a regular file (opened non-blocking)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file (a pipe, device or directory)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass(frozen=True)
class FolderSplit:
    """A split decoded from image files, batch by batch, in `workers` processes."""

    dataset: DecodedImages
    workers: int = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, order: Sequence[Tensor]) -> Iterator[Batch]:
        if not order:
            return iter(())
        loader = DataLoader(
            self.dataset, batch_sampler=[i.tolist() for i in order], num_workers=self.workers,
            worker_init_fn=ignore_sigint if self.workers else None,
        )
        return iter(loader)

    @property
    def targets(self) -> Tensor:
        return torch.tensor([label for _, label in self.dataset.samples], dtype=torch.int64)

    def subset(self, indices: Tensor) -> FolderSplit:
        d = self.dataset
        return FolderSplit(DecodedImages([d.samples[i] for i in indices.tolist()], d.mode, d.size), self.workers)


def ignore_sigint(_: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process handles it (see the trainer).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class Data:
    """A dataset ready for a spec: its splits, class names in label order, per-channel statistics.
    `val` picks the best epoch and stops early; `test` is held out (None: the dataset has none)."""

    name: str
    train: Split
    val: Split | None
    test: Split | None
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # of the training images, on a 0..1 scale, one per spec channel
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def on_device(data: Data, device: torch.device) -> Data:
    """In-memory splits moved to the training device once (a GPU, when they take at most a
    quarter of its free memory), so batches are gathered there and never cross the bus."""
    if device.type == "cpu":
        return data
    splits = [s for s in (data.train, data.val, data.test) if isinstance(s, TensorSplit)]
    size = sum(s.images.numel() + s.labels.numel() * 8 for s in splits)
    if device.type == "cuda" and size > torch.cuda.mem_get_info(device)[0] // 4:
        return data

    def move(split: Split | None) -> Split | None:
        if not isinstance(split, TensorSplit):
            return split  # decoded per batch: moved batch by batch
        return replace(split, images=split.images.to(device), labels=split.labels.to(device))  # keeps the kind

    return replace(data, train=move(data.train) or data.train, val=move(data.val), test=move(data.test))


def stratified_split(labels: Tensor, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """(picked, rest): `count` indices drawn from each class in proportion to its size (largest
    remainders round), seeded; both sorted, so the samples keep their order."""
    gen = torch.Generator().manual_seed(seed)
    classes, sizes = labels.unique(return_counts=True)
    share = sizes.double() * count / max(1, len(labels))
    take = share.floor().long()
    extra = torch.argsort(share - take, descending=True, stable=True)[: count - int(take.sum())]
    take[extra] += 1
    picked = [
        (labels == c).nonzero().flatten()[torch.randperm(int(n), generator=gen)[: int(k)]]
        for c, n, k in zip(classes, sizes, take)
    ]
    chosen = torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[chosen] = False
    return chosen, keep.nonzero().flatten()


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, h, w) on a 0..1 scale (float64 sums)."""
    means, stds = [], []
    for c in range(images.shape[1]):  # one channel at a time: 50,000 CIFAR images are 400 MB as float64
        x = images[:, c].reshape(-1).double() / 255
        means.append(float(x.mean()))
        stds.append(max(float(x.std()), 1e-3))  # a constant channel must not divide by zero
    return tuple(means), tuple(stds)


def split_stats(split: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """channel_stats of all a split's images in memory, or of STATS_SAMPLE evenly spaced files."""
    if isinstance(split, TensorSplit):
        return channel_stats(split.images.cpu())
    assert isinstance(split, FolderSplit)
    images = split.dataset
    picks = torch.linspace(0, len(images) - 1, min(len(images), STATS_SAMPLE)).round().long().unique()
    return channel_stats(torch.stack([images[int(i)][0] for i in picks]))


def to_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 (N, C, h, w) with C in {1, 3} -> (N, channels, h, w): gray repeated, or RGB -> luma."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class Source:
    """What a dataset module loads: its splits as shipped (val None: carved from train by the
    registry) and its class names in label order."""

    name: str
    train: Split
    val: Split | None
    test: Split | None
    classes: tuple[str, ...]
