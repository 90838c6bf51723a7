"""Image folders decoded once into memory and cached on disk, keyed by every file's identity.

The cache lives in `cache_dir` (training.dataset.cache_dir, else $CNN_SPEC_BUILDER_CACHE, else
$XDG_CACHE_HOME or ~/.cache, then cnn-spec-builder/): one safetensors file per folder, decode
size and subset, as large as the decoded uint8 images (N x C x H x W bytes). Deleting it is safe.
Each file holds a checksum of its tensors, verified on reading: a damaged file is decoded anew
(with a warning), never trained on.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from builder.lang.files import WriteError, write_bytes
from builder.model.build import available_memory
from training.checkpoint import CHECKSUM, checksum, load_weights
from training.config import ImageFolderData
from training.data.splits import DecodedImages, FolderSplit, TensorSplit, ignore_sigint
from training.errors import CheckpointError

IN_MEMORY_FRACTION = 0.25  # `in_memory: auto` keeps a folder whose decoded bytes fit in this share of free memory
CACHE_ENV = "CNN_SPEC_BUILDER_CACHE"  # overrides the default cache directory
CACHE_VERSION = 3  # part of every key: bump it when the decoding or the file layout changes (3: checksums)
DECODE_BATCH = 256  # images per work item when decoding a whole folder

NamedSplit = tuple[str, FolderSplit]  # (train, val or test) and its image files


def keep_in_memory(config: ImageFolderData, count: int, shape: tuple[int, int, int]) -> bool:
    """config.in_memory, or for auto: do `count` decoded uint8 images of `shape` fit the size rule?"""
    if config.in_memory != "auto":
        return config.in_memory
    return count * shape[0] * shape[1] * shape[2] <= IN_MEMORY_FRACTION * available_memory()


def cache_dir(config: ImageFolderData) -> Path:
    """config.cache_dir, else $CNN_SPEC_BUILDER_CACHE, else $XDG_CACHE_HOME (~/.cache)/cnn-spec-builder."""
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnn-spec-builder"


def cache_key(root: Path, splits: Sequence[NamedSplit]) -> str:
    """A hash of the decode settings and of every file's path (relative to the root), label,
    size and modification time: a changed, added, removed or renamed image changes it."""
    first = splits[0][1].dataset
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((CACHE_VERSION, first.mode, first.size)).encode())
    for name, split in splits:
        digest.update(name.encode())
        for path, label in split.dataset.samples:
            stat = os.stat(path)
            digest.update(repr((os.path.relpath(path, root), label, stat.st_size, stat.st_mtime_ns)).encode())
        digest.update(b"|")  # the end of a split
    return digest.hexdigest()


def cached_splits(config: ImageFolderData, root: Path, splits: Sequence[NamedSplit]) -> tuple[TensorSplit, ...]:
    """The splits decoded into memory: read from the cache, or decoded (in the splits' worker
    processes, with a progress bar) and then cached. A damaged or mismatched file is decoded anew."""
    key = cache_key(root, splits)
    path = cache_dir(config) / f"image_folder-{key}.safetensors"
    found = read_cache(path, splits)
    if found is not None:
        return found
    total = sum(len(s) for _, s in splits)
    # disable=None: shown on a terminal only, so logs stay clean
    with tqdm(total=total, desc=f"decoding {root} (cached in {path.parent})", unit="img", leave=False,
              disable=None) as bar:
        decoded = tuple(decode_split(split, bar) for _, split in splits)
    write_cache(path, [name for name, _ in splits], decoded, key)
    return decoded


def decode_split(split: FolderSplit, bar: tqdm | None = None) -> TensorSplit:
    """Every image of `split`, in order, as one uint8 tensor (N, C, H, W) and labels (N,)."""
    loader = DataLoader(split.dataset, batch_size=DECODE_BATCH, num_workers=split.workers,
                        worker_init_fn=ignore_sigint if split.workers else None)
    parts = []
    for part in loader:
        parts.append(part)
        if bar is not None:
            bar.update(len(part[1]))
    if not parts:
        return TensorSplit(torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    return TensorSplit(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def read_cache(path: Path, expected: Sequence[NamedSplit]) -> tuple[TensorSplit, ...] | None:
    """The cached splits, or None when the file is missing, unreadable, damaged (its checksum) or
    does not match; a file that exists but cannot be used is named in a warning."""
    if not path.exists():
        return None
    try:
        tensors = load_weights(path)  # a regular file whose checksum matches its tensors
        splits = tuple(TensorSplit(tensors[f"{n}_images"], tensors[f"{n}_labels"]) for n, _ in expected)
        usable = all(matches(s, d.dataset) for s, (_, d) in zip(splits, expected))
    except (CheckpointError, KeyError) as exc:
        usable, why = False, str(exc)
    else:
        why = "it does not hold these images"
    if not usable:
        warnings.warn(f"the image cache {path} cannot be used ({why}); decoding the images anew", stacklevel=2)
        return None
    return splits


def matches(split: TensorSplit, images: DecodedImages) -> bool:
    """Does a cached split have the images' count, shape and labels?"""
    height, width = images.size
    shape = (len(images), 1 if images.mode == "L" else 3, height, width)
    labels = torch.tensor([label for _, label in images.samples], dtype=torch.int64)
    return (
        split.images.dtype == torch.uint8 and tuple(split.images.shape) == shape
        and split.labels.dtype == torch.int64 and torch.equal(split.labels, labels)
    )


def write_cache(path: Path, names: Sequence[str], splits: Sequence[TensorSplit], key: str) -> None:
    """Atomically; a cache that cannot be written is skipped with a warning."""
    from safetensors.torch import save

    tensors = {f"{n}_{part}": getattr(s, part).contiguous() for n, s in zip(names, splits)
               for part in ("images", "labels")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, save(tensors, metadata={"key": key, CHECKSUM: checksum(tensors)}))
    except (OSError, WriteError) as exc:
        warnings.warn(f"cannot write the image cache {path}: {exc}; the images stay in memory", stacklevel=2)
