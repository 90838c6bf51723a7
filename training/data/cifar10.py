"""CIFAR-10 in torchvision's layout: ROOT/cifar-10-batches-py/{data_batch_1..5,test_batch}.

The batches are pickles; they are read by an unpickler that builds dicts, lists and numpy arrays
only, so a file that would import anything else is refused, never run.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from builder.lang.spec import Spec
from training.config import Cifar10Data
from training.data.splits import Source, TensorSplit, to_channels
from training.errors import ConfigProblems

ROOT = ("training", "dataset", "root")
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
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


def load(config: Cifar10Data, spec: Spec, workers: int = 0) -> Source:
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
    channels = spec.input.channels
    train, test = (read_cifar_batches(folder, names, channels) for names in (CIFAR_TRAIN, CIFAR_TEST))
    return Source("cifar10", train, None, test, CLASSES)


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
        and all(type(label) is int and 0 <= label < len(CLASSES) for label in labels)
    ):
        what = "a dict of 'data' uint8 Nx3072 and 'labels' 0..9"
        raise ConfigProblems.at(ROOT, f"{path} is not a CIFAR-10 batch ({what})")
    return {"data": np.ascontiguousarray(data), "labels": labels}
