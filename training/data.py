"""Datasets that feed a spec's input shape, and per-batch augmentation on tensors.

A split yields batches of uint8 images (N, C, h, w) with C already the spec's channel count
(gray <-> RGB converted once) and int64 labels (N,). `Preprocess` then resizes them to the
spec's H x W, augments them (training only) and normalizes them with the dataset's per-channel
statistics, on the training device, batch by batch.

Two kinds of split: `TensorSplit` holds a whole dataset decoded once in memory (digits, cifar10,
fake, and image folders that fit in memory, cached on disk); `FolderSplit` decodes image files
per sample in DataLoader workers (image folders too large for memory).

Every random choice comes from a generator seeded by (seed, epoch[, step]), never from global
state, so a run stopped at any step resumes with exactly the same batches and augmentations.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from builder.lang.spec import Spec
from builder.model.build import available_memory
from training.config import Augment, Cifar10Data, DatasetConfig, DigitsData, FakeData, ImageFolderData
from training.errors import BadImageError, ConfigProblems

Batch = tuple[Tensor, Tensor]  # uint8 images (N, C, h, w), int64 labels (N,)
ROOT = ("training", "dataset", "root")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")
STATS_SAMPLE = 512  # images of an image folder decoded to estimate its mean and std


class Split(Protocol):
    """One side of a dataset (train or test) that yields batches in a given order."""

    def __len__(self) -> int: ...

    def batches(self, order: Sequence[Tensor]) -> Iterator[Batch]: ...


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
            worker_init_fn=_ignore_sigint if self.workers else None,
        )
        return iter(loader)


def _ignore_sigint(_: int) -> None:
    # Ctrl-C reaches the whole process group; only the main process handles it (see trainer).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class Data:
    """A dataset ready for a spec: both splits, its class count and per-channel statistics."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]  # of the training images, on a 0..1 scale, one per spec channel
    std: tuple[float, ...]


def on_device(data: Data, device: torch.device) -> Data:
    """In-memory splits moved to the training device once (a GPU, when they take at most a
    quarter of its free memory), so batches are gathered there and never cross the bus."""
    if device.type == "cpu":
        return data
    splits = [s for s in (data.train, data.test) if isinstance(s, TensorSplit)]
    size = sum(s.images.numel() + s.labels.numel() * 8 for s in splits)
    if device.type == "cuda" and size > torch.cuda.mem_get_info(device)[0] // 4:
        return data

    def move(split: Split) -> Split:
        if not isinstance(split, TensorSplit):
            return split  # decoded per batch: moved batch by batch
        return TensorSplit(split.images.to(device), split.labels.to(device))

    return replace(data, train=move(data.train), test=move(data.test))


# --- batch order --------------------------------------------------------------------------------


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (seed, epoch, step), with no collisions in practice."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(*parts))


# --- per-batch preprocessing on tensors -----------------------------------------------------------


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


def preprocess_for(data: Data, spec: Spec, augment: Augment, device: torch.device, channels_last: bool) -> Preprocess:
    stats = [torch.tensor(s, dtype=torch.float32, device=device).view(-1, 1, 1) for s in (data.mean, data.std)]
    return Preprocess((spec.input.height, spec.input.width), stats[0], stats[1], augment, channels_last)


# --- loading -----------------------------------------------------------------------------------------


def load_data(config: DatasetConfig, spec: Spec, workers: int = 0) -> Data:
    """The dataset of `config`, converted to the spec's channels, or a located problem."""
    check_channels(spec, config.kind)
    if isinstance(config, DigitsData):
        data = load_digits(config, spec.input.channels)
    elif isinstance(config, Cifar10Data):
        data = load_cifar10(config, spec.input.channels)
    elif isinstance(config, ImageFolderData):
        data = load_image_folder(config, spec, workers)
    else:
        data = load_fake(config, spec)
    check_classes(spec, data)
    return data


def check_channels(spec: Spec, kind: str) -> None:
    if spec.input.channels not in (1, 3):
        raise ConfigProblems.at(
            ("input", "channels"),
            f"{kind} images can feed 1 (grayscale) or 3 (RGB) input channels, not {spec.input.channels}",
        )


def check_classes(spec: Spec, data: Data) -> None:
    if spec.num_classes < data.num_classes:
        raise ConfigProblems.at(
            ("num_classes",),
            f"the {data.name} dataset has {data.num_classes} classes but the spec has only "
            f"{spec.num_classes} outputs; set num_classes: {data.num_classes}",
        )


def tensor_data(name: str, train: TensorSplit, test: TensorSplit, num_classes: int) -> Data:
    mean, std = channel_stats(train.images)
    return Data(name, train, test, num_classes, mean, std)


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, h, w) on a 0..1 scale (float64 sums)."""
    means, stds = [], []
    for c in range(images.shape[1]):  # one channel at a time: 50,000 CIFAR images are 400 MB as float64
        x = images[:, c].reshape(-1).double() / 255
        means.append(float(x.mean()))
        stds.append(max(float(x.std()), 1e-3))  # a constant channel must not divide by zero
    return tuple(means), tuple(stds)


def to_channels(images: Tensor, channels: int) -> Tensor:
    """uint8 (N, C, h, w) with C in {1, 3} -> (N, channels, h, w): gray repeated, or RGB -> luma."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)


def load_digits(config: DigitsData, channels: int) -> Data:
    """sklearn's 8x8 digits (values 0..16 -> 0..255) with a stratified, seeded train/test split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))[:, None]  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, test = train_test_split(
        np.arange(len(labels)), test_size=config.test_fraction, random_state=config.split_seed, stratify=digits.target
    )
    images = to_channels(images, channels)
    split = [TensorSplit(images[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in (train, test)]
    return tensor_data("digits", split[0], split[1], 10)


# --- cifar10: torchvision's pickle batches, read without running code ----------------------------------

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
_ARRAY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }
)


class _ForbiddenGlobal(Exception):
    """A pickle that asks for a global outside _ARRAY_GLOBALS (it could run code)."""


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only; any other global is refused, never imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise _ForbiddenGlobal(f"{module}.{name}")


def load_cifar10(config: Cifar10Data, channels: int) -> Data:
    root = Path(config.root)
    folder = cifar_folder(root)
    if folder is None and config.download:
        download_cifar10(root)
        folder = cifar_folder(root)
    if folder is None:
        raise ConfigProblems.at(
            ROOT,
            f"no CIFAR-10 files in {root} (expected {root / CIFAR_DIR}/data_batch_1..5 and test_batch); "
            "set training.dataset.download: true (or --set training.dataset.download=true) to fetch the "
            "170 MB archive from the internet, or point root at a directory that has them",
        )
    train, test = (read_cifar_batches(folder, names, channels) for names in (CIFAR_TRAIN, CIFAR_TEST))
    return tensor_data("cifar10", train, test, 10)


def cifar_folder(root: Path) -> Path | None:
    """ROOT/cifar-10-batches-py (or ROOT itself) when it holds every batch file."""
    for folder in (root / CIFAR_DIR, root):
        if all((folder / name).is_file() for name in CIFAR_TRAIN + CIFAR_TEST):
            return folder
    return None


def download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    try:  # md5-checked archive; extracting it runs no code
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except (OSError, RuntimeError) as exc:
        raise ConfigProblems.at(
            ("training", "dataset", "download"), f"could not download CIFAR-10 into {root}: {exc}"
        ) from None


def read_cifar_batches(folder: Path, names: Sequence[str], channels: int) -> TensorSplit:
    """Concatenate batch files: b'data' uint8 (N, 3072) -> (N, 3, 32, 32); b'labels' (N,)."""
    images, labels = [], []
    for name in names:
        batch = read_cifar_batch(folder / name)
        images.append(torch.from_numpy(batch["data"]).view(-1, 3, 32, 32))
        labels.append(torch.tensor(batch["labels"], dtype=torch.int64))
    return TensorSplit(to_channels(torch.cat(images), channels), torch.cat(labels))


def read_cifar_batch(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = _ArrayUnpickler(f, encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        msg = f"refused {path}: it would import {exc}; a CIFAR-10 batch holds only arrays and lists"
        raise ConfigProblems.at(ROOT, msg) from None
    except Exception as exc:  # a damaged file can fail in many ways inside pickle
        raise ConfigProblems.at(ROOT, f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()} if isinstance(raw, dict) else {}
    data, labels = batch.get("data"), batch.get("labels")
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
        and isinstance(labels, list) and len(labels) == len(data)
    ):
        raise ConfigProblems.at(ROOT, f"{path} is not a CIFAR-10 batch (a dict of 'data' uint8 Nx3072 and 'labels')")
    return {"data": np.ascontiguousarray(data), "labels": labels}


# --- image_folder: ROOT/{train,test|val}/<class>/<image> ---------------------------------------------


class DecodedImages(Dataset[tuple[Tensor, int]]):
    """(path, label) samples decoded to uint8 (C, H, W) at the spec's size, in `mode` (L or RGB)."""

    def __init__(self, samples: Sequence[tuple[str, int]], mode: str, size: tuple[int, int]) -> None:
        self.samples, self.mode, self.size = list(samples), mode, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        height, width = self.size
        try:
            with Image.open(path) as file:
                img = file.convert(self.mode)
            img = img if img.size == (width, height) else img.resize((width, height), Image.Resampling.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise BadImageError(f"{path}: cannot read image: {exc}") from None
        array = np.asarray(img, dtype=np.uint8).reshape(height, width, -1)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), label


def load_image_folder(config: ImageFolderData, spec: Spec, workers: int) -> Data:
    root = Path(config.root)
    layout = f"expected {root}/train/<class>/<images> and {root}/test/ (or val/) alike"
    if not root.is_dir():
        raise ConfigProblems.at(ROOT, f"no such directory: {root} ({layout})")
    test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise ConfigProblems.at(ROOT, f"{root} lacks a train/ or a test/ (val/) subfolder; {layout}")
    train, test = image_folder(root / "train"), image_folder(test_dir)
    if train.classes != test.classes:
        msg = f"{test_dir} has classes {test.classes} but {root / 'train'} has {train.classes}; they must match"
        raise ConfigProblems.at(ROOT, msg)
    mode, size = ("L" if spec.input.channels == 1 else "RGB"), (spec.input.height, spec.input.width)
    train_images, test_images = DecodedImages(train.samples, mode, size), DecodedImages(test.samples, mode, size)
    if keep_in_memory(config, len(train_images) + len(test_images), spec):
        held = cached_splits(config, (root / "train", train_images), (test_dir, test_images), workers=workers)
        return tensor_data("image_folder", held[0], held[1], len(train.classes))
    mean, std = channel_stats(sample_images(train_images))
    splits = FolderSplit(train_images, workers), FolderSplit(test_images, workers)
    return Data("image_folder", splits[0], splits[1], len(train.classes), mean, std)


def image_folder(path: Path) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path))
    except OSError as exc:  # no class folder, or no image in them
        raise ConfigProblems.at(ROOT, str(exc)) from None


def sample_images(images: DecodedImages) -> Tensor:
    """Up to STATS_SAMPLE images, evenly spaced, stacked to uint8 (N, C, H, W)."""
    picks = torch.linspace(0, len(images) - 1, min(len(images), STATS_SAMPLE)).round().long().unique()
    return torch.stack([images[int(i)][0] for i in picks])


# --- image_folder in memory: decoded once, cached on disk ---------------------------------------------

IN_MEMORY_FRACTION = 0.25  # `in_memory: auto` keeps a folder whose decoded bytes fit in this share of free memory
CACHE_ENV = "CNN_SPEC_BUILDER_CACHE"  # overrides the default cache directory
CACHE_VERSION = 1  # part of every key: bump it when the decoding changes
DECODE_BATCH = 256  # images per work item when decoding a whole folder
SPLIT_NAMES = ("train", "test")


def keep_in_memory(config: ImageFolderData, count: int, spec: Spec) -> bool:
    """config.in_memory, or for auto: do `count` decoded uint8 images fit the size rule?"""
    if config.in_memory != "auto":
        return config.in_memory
    decoded = count * spec.input.channels * spec.input.height * spec.input.width
    return decoded <= IN_MEMORY_FRACTION * available_memory()


def cache_dir(config: ImageFolderData) -> Path:
    """config.cache_dir, else $CNN_SPEC_BUILDER_CACHE, else $XDG_CACHE_HOME (~/.cache)/cnn-spec-builder."""
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnn-spec-builder"


SourceSplit = tuple[Path, DecodedImages]  # a split's folder and its images


def cache_key(splits: Sequence[SourceSplit]) -> str:
    """A hash of the decode settings and of every file's path (relative to its split folder),
    label, size and modification time: a changed, added, removed or renamed image changes it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((CACHE_VERSION, splits[0][1].mode, splits[0][1].size)).encode())
    for folder, images in splits:
        for path, label in images.samples:
            stat = os.stat(path)
            digest.update(repr((os.path.relpath(path, folder), label, stat.st_size, stat.st_mtime_ns)).encode())
        digest.update(b"|")  # the end of a split
    return digest.hexdigest()


def cached_splits(config: ImageFolderData, *splits: SourceSplit, workers: int = 0) -> tuple[TensorSplit, ...]:
    """The splits decoded into memory: read from the cache, or decoded (in `workers`
    processes) and then cached. A damaged or mismatched cache file is decoded anew."""
    key = cache_key(splits)
    path = cache_dir(config) / f"image_folder-{key}.safetensors"
    found = read_cache(path, [images for _, images in splits])
    if found is not None:
        return found
    decoded = tuple(decode_split(images, workers) for _, images in splits)
    write_cache(path, decoded, key)
    return decoded


def decode_split(images: DecodedImages, workers: int) -> TensorSplit:
    """Every image of `images`, in order, as one uint8 tensor (N, C, H, W) and labels (N,)."""
    loader = DataLoader(
        images, batch_size=DECODE_BATCH, num_workers=workers, worker_init_fn=_ignore_sigint if workers else None
    )
    parts = list(loader)
    return TensorSplit(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def read_cache(path: Path, expected: Sequence[DecodedImages]) -> tuple[TensorSplit, ...] | None:
    """The cached splits, or None when the file is missing, unreadable or does not match."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        splits = tuple(TensorSplit(tensors[f"{n}_images"], tensors[f"{n}_labels"]) for n in SPLIT_NAMES)
    except Exception:  # a truncated or damaged file can fail in many ways; it is rebuilt
        return None
    return splits if all(matches(s, d) for s, d in zip(splits, expected)) else None


def matches(split: TensorSplit, images: DecodedImages) -> bool:
    """Does a cached split have the images' count, shape and labels?"""
    height, width = images.size
    shape = (len(images), 1 if images.mode == "L" else 3, height, width)
    labels = torch.tensor([label for _, label in images.samples], dtype=torch.int64)
    return (
        split.images.dtype == torch.uint8 and tuple(split.images.shape) == shape
        and split.labels.dtype == torch.int64 and torch.equal(split.labels, labels)
    )


def write_cache(path: Path, splits: Sequence[TensorSplit], key: str) -> None:
    """Atomically (a temporary file, then os.replace); a cache that cannot be written is skipped."""
    from safetensors.torch import save_file

    tensors = {f"{n}_{part}": getattr(s, part).contiguous() for n, s in zip(SPLIT_NAMES, splits)
               for part in ("images", "labels")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"key": key})
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        warnings.warn(f"cannot write the image cache {path}: {exc}; the images stay in memory", stacklevel=2)


# --- fake ------------------------------------------------------------------------------------------------


def load_fake(config: FakeData, spec: Spec) -> Data:
    """torchvision's FakeData at the spec's shape; the test images follow the train ones."""
    from torchvision.datasets import FakeData as TorchvisionFake

    classes = config.num_classes or spec.num_classes
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    train = TorchvisionFake(config.train_size, shape, classes)
    test = TorchvisionFake(config.test_size, shape, classes, random_offset=config.train_size)
    return tensor_data("fake", decode_all(train), decode_all(test), classes)


def decode_all(dataset: Any) -> TensorSplit:
    """A dataset of (PIL image, label) decoded once into memory."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    pairs = [(pil_to_tensor(image), int(label)) for image, label in dataset]
    return TensorSplit(torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs], dtype=torch.int64))
