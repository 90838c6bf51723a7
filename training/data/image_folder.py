"""Any ROOT/train/<class>/<image> tree, with ROOT/val/ (validation) and ROOT/test/ (held out).

A folder without val/ gets its validation carved from train/ by the registry; one without test/
has no test split. Images are decoded per batch (FolderSplit) here; `materialize` then decodes
them once into memory (cached on disk) when they fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.lang.spec import Spec
from training.config import ImageFolderData
from training.data.cache import cached_splits, keep_in_memory
from training.data.splits import IMAGE_EXTENSIONS, DecodedImages, FolderSplit, Source, Split, TensorSplit
from training.errors import ConfigProblems

ROOT = ("training", "dataset", "root")
EXTENSIONS = tuple(IMAGE_EXTENSIONS)  # the formats the docs list; nothing else is decoded


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


@dataclass(frozen=True)
class Folder:
    """A split folder's classes (sorted) and (path, label) samples, in torchvision ImageFolder's order."""

    classes: list[str]
    samples: list[tuple[str, int]]


def image_folder(path: Path) -> Folder:
    """Scan PATH/<class>/**/<image> like torchvision's ImageFolder (symlinks followed), but refuse
    a directory symlink loop (it would repeat images without end) and a dangling image link."""
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir())
    if not classes:
        raise ConfigProblems.at(ROOT, f"Couldn't find any class folder in {path}.")
    samples = [(file, label) for label, name in enumerate(classes) for file in class_files(path / name)]
    if not samples:
        raise ConfigProblems.at(ROOT, f"Found no valid file for the classes of {path}; "
                                      f"supported extensions are: {', '.join(EXTENSIONS)}")
    return Folder(classes, samples)


def class_files(folder: Path) -> list[str]:
    """The image files under one class folder, sorted by directory then name."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or any(os.path.realpath(os.path.join(root, d)) == real for d in dirs):
            raise ConfigProblems.at(ROOT, f"{root} is a folder reached twice through symlinks (a loop, or a second "
                                          "link to it): its images would repeat; remove the link")
        seen.add(real)
        images = [f for f in files if f.lower().endswith(EXTENSIONS)]
        for name in images:
            if not os.path.exists(os.path.join(root, name)):
                raise ConfigProblems.at(ROOT, f"{os.path.join(root, name)} is a dangling symlink; remove it")
        found.append((root, sorted(images)))
    return [os.path.join(root, name) for root, names in sorted(found) for name in names]


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
