"""Any ROOT/train/<class>/<image> tree, with ROOT/val/ (validation) and ROOT/test/ (held out).

A folder without val/ gets its validation carved from train/ by the registry; one without test/
has no test split. Images are decoded per batch (FolderSplit) here; `materialize` then decodes
them once into memory (cached on disk) when they fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from builder.lang.spec import Spec
from training.config import ImageFolderData
from training.data.cache import cached_splits, keep_in_memory
from training.data.splits import DecodedImages, FolderSplit, Source, Split, TensorSplit
from training.errors import ConfigProblems

ROOT = ("training", "dataset", "root")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def load(config: ImageFolderData, spec: Spec, workers: int = 0) -> Source:
    root = Path(config.root)
    layout = f"expected {root}/train/<class>/<images> and {root}/test/ (or val/) alike"
    if not root.is_dir():
        raise ConfigProblems.at(ROOT, f"no such directory: {root} ({layout})")
    found = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" not in found or len(found) == 1:
        raise ConfigProblems.at(ROOT, f"{root} lacks a train/ or a test/ (val/) subfolder; {layout}")
    folders = {name: image_folder(path) for name, path in found.items()}
    classes = folders["train"].classes
    for name, folder in folders.items():
        if folder.classes != classes:
            msg = f"{found[name]} has classes {folder.classes} but {found['train']} has {classes}; they must match"
            raise ConfigProblems.at(ROOT, msg)
    mode, size = ("L" if spec.input.channels == 1 else "RGB"), (spec.input.height, spec.input.width)
    splits = {name: FolderSplit(DecodedImages(f.samples, mode, size), workers) for name, f in folders.items()}
    return Source("image_folder", splits["train"], splits.get("val"), splits.get("test"), tuple(classes))


def image_folder(path: Path) -> Any:
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(path))
    except OSError as exc:  # no class folder, or no image in them
        raise ConfigProblems.at(ROOT, str(exc)) from None


def materialize(config: ImageFolderData, splits: dict[str, Split | None]) -> dict[str, Split | None]:
    """The splits decoded into memory (from the cache when it has them) if they fit, else as they are."""
    named = [(name, s) for name, s in splits.items() if isinstance(s, FolderSplit)]
    if not named:
        return splits
    first = named[0][1].dataset
    shape = (1 if first.mode == "L" else 3, *first.size)
    if not keep_in_memory(config, sum(len(s) for _, s in named), shape):
        return splits
    decoded: dict[str, TensorSplit] = dict(zip([n for n, _ in named], cached_splits(config, Path(config.root), named)))
    return {name: decoded.get(name, split) for name, split in splits.items()}
