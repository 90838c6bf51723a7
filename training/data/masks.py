"""Segmentation data: images with a mask each, decoded once into memory at the spec's size.

Two layouts: MMSegmentation's ROOT/img_dir/{train,val,test} beside ROOT/ann_dir/{train,val,test},
image and mask paired by file stem (`seg_folder`), and CSVs of `image`,`mask` path pairs
(`seg_csv`, the reference U-Net's format). Images are resized bilinearly, masks with nearest
neighbours, so a mask keeps its class values. Binary masks (0/255 grayscale) become 0/1 where
value / 255 > 0.5, as the reference thresholds them; index masks (grayscale or palette PNG) keep
each pixel's value as its class, `ignore_index` included. A mask whose size differs from its
image's, a value that is neither a class nor ignore_index, and an image without a mask are each
one located error.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from builder.lang.spec import Spec
from training.config import SegmentationCsvData, SegmentationFolderData
from training.data.image_folder import EXTENSIONS
from training.data.splits import Source, TensorSplit, decode_image, ignore_sigint
from training.errors import BadImageError, ConfigProblems

ROOT = ("training", "dataset", "root")
SPLITS = ("train", "val", "test")
BINARY_CLASSES = ("background", "foreground")
DECODE_BATCH = 64


@dataclass(frozen=True)
class MaskSplit(TensorSplit):
    """A split in memory: uint8 images (N, C, H, W) and uint8 masks (N, H, W) in `labels`;
    batches give the masks as int64 (N, H, W)."""

    def batches(self, order: Sequence[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        for images, masks in super().batches(order):
            yield images, masks.long()

    @property
    def targets(self) -> Tensor:
        """Each image's most frequent class other than 0 (and 255), 0 if none: what subsets and
        the validation split are stratified by."""
        masks = self.labels.cpu()
        found = torch.zeros(len(masks), dtype=torch.int64)
        for i, mask in enumerate(masks):
            counts = torch.bincount(mask.flatten().long(), minlength=256)[1:255]
            found[i] = int(counts.argmax()) + 1 if int(counts.max()) > 0 else 0
        return found

    def subset(self, indices: Tensor) -> MaskSplit:
        return MaskSplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class MaskReader:
    """How to read the masks of a dataset."""

    binary: bool
    num_classes: int
    ignore_index: int

    def read(self, path: str, size: tuple[int, int], image_size: tuple[int, int], image: str) -> np.ndarray:
        """One mask file -> uint8 (H, W) of class indices at `size`; raises BadImageError."""
        from PIL import Image

        try:
            with Image.open(path) as file:
                # binary: read as grayscale, as the reference does; index: the values as stored
                mask = file.convert("L") if self.binary and file.mode != "L" else file
                if mask.mode not in ("L", "P"):
                    raise BadImageError(f"{path}: an index mask must be a grayscale or palette PNG, not mode "
                                        f"{mask.mode}")
                if mask.size != image_size:
                    raise BadImageError(f"{path}: the mask is {_wxh(mask.size)} but its image {image} is "
                                        f"{_wxh(image_size)}")
                values = self.values(np.asarray(mask, dtype=np.uint8), path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise BadImageError(f"{path}: cannot read mask: {exc}") from None
        return resize_mask(values, size)

    def values(self, mask: np.ndarray, path: str) -> np.ndarray:
        if self.binary:
            return (mask.astype(np.float32) / 255 > 0.5).astype(np.uint8)
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            value = int(mask[bad].max())
            raise BadImageError(f"{path}: mask value {value} is not a class (0..{self.num_classes - 1}) nor "
                                f"ignore_index ({self.ignore_index})")
        return mask


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (H, W), so every pixel keeps a class value."""
    from PIL import Image

    height, width = size
    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST), dtype=np.uint8)


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


class PairFiles(Dataset[tuple[Tensor, Tensor, str]]):
    """(image, mask) path pairs decoded to (uint8 (C, H, W), uint8 (H, W), error); a bad pair gives
    its error line instead (raised by the main process, since workers cannot raise it as it is)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], mode: str, size: tuple[int, int], reader: MaskReader):
        self.pairs, self.mode, self.size, self.reader = list(pairs), mode, size, reader

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, str]:
        image, mask = self.pairs[index]
        empty = torch.zeros(0, dtype=torch.uint8)
        try:
            decoded = decode_image(image, self.mode, self.size)
            values = self.reader.read(mask, self.size, image_size(image), image)
        except BadImageError as exc:
            return empty, empty, str(exc)
        return decoded, torch.from_numpy(values.copy()), ""


def image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as file:
            return file.size
    except (OSError, ValueError) as exc:
        raise BadImageError(f"{path}: cannot read image: {exc}") from None


def decode_pairs(pairs: Sequence[tuple[str, str]], mode: str, size: tuple[int, int], reader: MaskReader,
                 workers: int) -> MaskSplit:
    """Every pair decoded into memory, in order; the first bad one is a located error."""
    dataset = PairFiles(pairs, mode, size, reader)
    loader = DataLoader(dataset, batch_size=DECODE_BATCH, num_workers=workers, collate_fn=list,
                        worker_init_fn=ignore_sigint if workers else None)
    images, masks = [], []
    for batch in loader:
        for image, mask, error in batch:
            if error:
                raise ConfigProblems.at(ROOT, error)
            images.append(image)
            masks.append(mask)
    return MaskSplit(torch.stack(images), torch.stack(masks))


# --- the two layouts --------------------------------------------------------------------------


def classes_of(config: SegmentationFolderData | SegmentationCsvData, spec: Spec) -> tuple[str, ...]:
    """The class names: background/foreground for binary masks, else `classes` or 0..n-1."""
    if config.masks == "binary":
        if config.classes is not None and len(config.classes) != 2:
            raise ConfigProblems.at(("training", "dataset", "classes"), "binary masks have 2 classes "
                                    f"(background, foreground), not {len(config.classes)}")
        return tuple(config.classes or BINARY_CLASSES)
    count = config.num_classes or (len(config.classes) if config.classes else spec.num_classes)
    if config.classes is not None and len(config.classes) != count:
        raise ConfigProblems.at(("training", "dataset", "classes"),
                                f"names {len(config.classes)} classes but num_classes is {count}")
    return tuple(config.classes or (str(i) for i in range(count)))


def reader_of(config: SegmentationFolderData | SegmentationCsvData, classes: tuple[str, ...]) -> MaskReader:
    return MaskReader(config.masks == "binary", len(classes), config.ignore_index)


def load_folder(config: SegmentationFolderData, spec: Spec, workers: int = 0) -> Source:
    """ROOT/img_dir/SPLIT/* paired by stem with ROOT/ann_dir/SPLIT/*; train/ and val/ or test/ needed."""
    root = Path(config.root)
    images, masks = root / config.img_dir, root / config.ann_dir
    layout = f"expected {images}/{{train,val,test}}/<images> and {masks}/{{train,val,test}}/<masks>"
    found = [name for name in SPLITS if (images / name).is_dir()]
    if not root.is_dir() or "train" not in found or len(found) == 1:
        raise ConfigProblems.at(ROOT, f"{root} lacks {config.img_dir}/train and {config.img_dir}/val or test; {layout}")
    classes = classes_of(config, spec)
    splits = {name: decode_pairs(paired(images / name, masks / name, config.mask_suffix), mode_of(spec),
                                 size_of(spec), reader_of(config, classes), workers) for name in found}
    return Source("seg_folder", splits["train"], splits.get("val"), splits.get("test"), classes)


def paired(images: Path, masks: Path, suffix: str) -> list[tuple[str, str]]:
    """(image, mask) of every image in `images`, its mask the file of `masks` named stem + suffix."""
    files = sorted(f for f in os.listdir(images) if f.lower().endswith(EXTENSIONS))
    if not files:
        raise ConfigProblems.at(ROOT, f"{images} holds no images ({', '.join(EXTENSIONS)})")
    by_stem = {Path(f).stem: f for f in (os.listdir(masks) if masks.is_dir() else []) if f.lower().endswith(EXTENSIONS)}
    pairs = []
    for name in files:
        mask = by_stem.get(Path(name).stem + suffix)
        if mask is None:
            raise ConfigProblems.at(ROOT, f"{images / name} has no mask: no {Path(name).stem + suffix}.* in {masks}")
        pairs.append((str(images / name), str(masks / mask)))
    return pairs


def load_csv(config: SegmentationCsvData, spec: Spec, workers: int = 0) -> Source:
    """ROOT.csv (all for training; validation carved), or ROOT/{train,val,test}.csv."""
    root = Path(config.root)
    if root.is_file():
        files = {"train": root}
    elif root.is_dir():
        files = {name: root / f"{name}.csv" for name in SPLITS if (root / f"{name}.csv").is_file()}
        if "train" not in files:
            raise ConfigProblems.at(ROOT, f"{root} holds no train.csv (with image,mask columns)")
    else:
        raise ConfigProblems.at(ROOT, f"no such file or directory: {root} (a CSV of image,mask pairs, or a "
                                      "folder of train.csv, val.csv, test.csv)")
    classes = classes_of(config, spec)
    splits = {name: decode_pairs(csv_pairs(path), mode_of(spec), size_of(spec), reader_of(config, classes), workers)
              for name, path in files.items()}
    return Source("seg_csv", splits["train"], splits.get("val"), splits.get("test"), classes)


def csv_pairs(path: Path) -> list[tuple[str, str]]:
    """The (image, mask) paths of a CSV, relative ones resolved against the CSV's folder."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigProblems.at(ROOT, f"cannot read {path}: {exc}") from None
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise ConfigProblems.at(ROOT, f"{path} needs a header with image and mask columns and at least one row")
    pairs = []
    for line, row in enumerate(rows, start=2):
        image, mask = (row.get("image") or "").strip(), (row.get("mask") or "").strip()
        if not image or not mask:
            what = "image" if not image else "mask"
            raise ConfigProblems.at(ROOT, f"{path}:{line}: no {what}" + (f" for {image}" if image else ""))
        pairs.append((str(path.parent / image), str(path.parent / mask)))
    for image, mask in pairs:
        for file in (image, mask):
            if not os.path.isfile(file):
                raise ConfigProblems.at(ROOT, f"{path}: {file} does not exist" +
                                        (f" (the mask of {image})" if file == mask else ""))
    return pairs


def mode_of(spec: Spec) -> str:
    return "L" if spec.input.channels == 1 else "RGB"


def size_of(spec: Spec) -> tuple[int, int]:
    return spec.input.height, spec.input.width

