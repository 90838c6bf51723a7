"""Datasets that feed a spec's input shape: one module per source behind one registry.

`load_data(config, spec)` loads the source (digits, cifar10, image_folder, fake; for segmentation
seg_folder, seg_csv, shapes), takes the
seeded stratified subsets the config asks for (train_size, test_size), carves a validation split
from train when the source ships none (val_fraction), decodes image folders into memory when they
fit, and measures the per-channel statistics of the training images. `preprocess_for` gives the
per-batch preprocessing (training/data/augment.py; joint with masks for segmentation, joint.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from builder.lang.spec import Spec
from training.config import Augment, DatasetConfig, ImageFolderData, SegmentationAugment
from training.data import cifar10, digits, fake, image_folder, masks, shapes
from training.data.augment import Preprocess, generator, random_crop, random_hflip, resize
from training.data.joint import JointPreprocess
from training.data.splits import (
    Data,
    DecodedImages,
    FolderSplit,
    Source,
    Split,
    TensorSplit,
    on_device,
    split_stats,
    stratified_split,
)
from training.errors import ConfigProblems

SOURCES: dict[str, Callable[[Any, Spec, int], Source]] = {
    "digits": digits.load, "cifar10": cifar10.load, "image_folder": image_folder.load, "fake": fake.load,
    "seg_folder": masks.load_folder, "seg_csv": masks.load_csv, "shapes": shapes.load,
}
DATASET = ("training", "dataset")

__all__ = [
    "SOURCES", "Data", "DecodedImages", "FolderSplit", "Preprocess", "Split", "TensorSplit", "generator",
    "load_data", "on_device", "preprocess_for", "random_crop", "random_hflip", "resize",
]


def load_data(config: DatasetConfig, spec: Spec, workers: int = 0) -> Data:
    """The dataset of `config`, converted to the spec's channels, or a located problem."""
    check_channels(spec, config.kind)
    source = SOURCES[config.kind](config, spec, workers)
    train, test = subset(source.train, config.train_size, config.split_seed), source.test
    if test is not None:
        test = subset(test, config.test_size, config.split_seed)
    val = source.val
    if val is None and config.val_fraction > 0:
        train, val = carve_validation(train, config.val_fraction, config.split_seed)
    splits: dict[str, Split | None] = {"train": train, "val": val, "test": test}
    if isinstance(config, ImageFolderData):
        splits = image_folder.materialize(config, splits)
    mean, std = split_stats(splits["train"] or train)
    data = Data(source.name, splits["train"] or train, splits["val"], splits["test"], source.classes, mean, std)
    if config.task == "segmentation":
        check_mask_classes(spec, data)
    else:
        check_classes(spec, data)
    return data


def subset(split: Split, size: int | None, seed: int) -> Split:
    """A seeded, stratified `size` of the split (all of it when size is None or not smaller)."""
    if size is None or size >= len(split):
        return split
    return split.subset(stratified_split(split.targets, size, seed)[0])


def carve_validation(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """(train, val): a seeded, stratified `fraction` of the training split held out for validation."""
    count = max(1, round(fraction * len(train)))
    if count >= len(train):
        raise ConfigProblems.at((*DATASET, "val_fraction"), f"leaves no training images of {len(train)}")
    val, rest = stratified_split(train.targets, count, seed + 1)  # not the subset's draw
    return train.subset(rest), train.subset(val)


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


def check_mask_classes(spec: Spec, data: Data) -> None:
    """One output channel per class, or one for two classes (binary: BCE, thresholded at 0)."""
    n = data.num_classes
    if spec.num_classes != n and not (n == 2 and spec.num_classes == 1):
        binary = " (or 1, binary)" if n == 2 else ""
        raise ConfigProblems.at(
            ("num_classes",),
            f"the {data.name} masks have {n} classes ({', '.join(data.classes)}) but the spec has "
            f"{spec.num_classes} output channels; set num_classes: {n}{binary}",
        )


def preprocess_for(
    mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int], augment: Augment | SegmentationAugment,
    device: torch.device, channels_last: bool = False, ignore_index: int = 255,
) -> Preprocess:
    """The preprocessing of images of `size` (H, W) normalized by a dataset's `mean` and `std`;
    with a segmentation dataset's augment, of images and masks together."""
    stats = [torch.tensor(s, dtype=torch.float32, device=device).view(-1, 1, 1) for s in (mean, std)]
    if isinstance(augment, SegmentationAugment):
        return JointPreprocess(size, stats[0], stats[1], Augment(crop_padding=0, hflip=False), channels_last,
                               augment, ignore_index)
    return Preprocess(size, stats[0], stats[1], augment, channels_last)
