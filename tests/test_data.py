"""Every dataset kind feeds the spec's input shape; augmentation is seeded and training-only."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from builder.lang.loading import load_spec
from training.config import Augment, Cifar10Data, DigitsData, FakeData, ImageFolderData, TrainingConfig
from training.data import (
    Data,
    FolderSplit,
    Preprocess,
    TensorSplit,
    generator,
    load_data,
    on_device,
    preprocess_for,
    random_crop,
)
from training.data import cache as cache_module
from training.data import splits as splits_module
from training.data.augment import alternate_flips, flip_phases
from training.data.cifar10 import CIFAR_DIR
from training.distributed import Dist, epoch_batches, eval_indices
from training.errors import BadImageError, ConfigProblems

SHARED_CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10"

SPEC = """\
name: small
input: {{channels: {c}, height: {h}, width: {w}}}
num_classes: {classes}
blocks:
  - {{out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}}
  - {{out_channels: 8, kernel_size: 3, padding: 1}}
classifier: {{hidden: [16]}}
"""


@pytest.fixture(autouse=True)
def image_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test decodes image folders into its own cache directory, never the user's."""
    monkeypatch.setenv(cache_module.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def spec_of(write_spec: Callable[..., Path]) -> Callable[..., object]:
    def make(c: int = 3, h: int = 16, w: int = 16, classes: int = 10) -> object:
        return load_spec(write_spec(SPEC.format(c=c, h=h, w=w, classes=classes)))

    return make


def first_batch(data: Data, split: str = "train", size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    part = getattr(data, split)
    return next(iter(part.batches(eval_indices(Dist(), len(part), size))))


# --- digits ----------------------------------------------------------------------------------------


def test_digits_split_is_stratified_fixed_and_converted_to_rgb(spec_of: Callable[..., object]) -> None:
    data = load_data(DigitsData(kind="digits"), spec_of(c=3))  # type: ignore[arg-type]
    assert (len(data.train) + len(data.val), len(data.test), data.num_classes) == (1437, 360, 10)
    assert len(data.val) == 144 and int(torch.bincount(data.val.labels).min()) >= 14  # 10% of train, stratified
    images, _ = first_batch(data)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 8, 8)  # native size, resized per batch
    assert torch.equal(images[:, 0], images[:, 1]) and int(images.max()) == 255
    counts = torch.bincount(data.test.labels)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified: 20% of each class (174..183)
    again = load_data(DigitsData(kind="digits"), spec_of(c=3))  # type: ignore[arg-type]
    assert torch.equal(again.test.labels, data.test.labels)
    other = load_data(DigitsData(kind="digits", split_seed=1), spec_of(c=3))  # type: ignore[arg-type]
    assert not torch.equal(other.test.labels, data.test.labels)
    assert len(set(data.mean)) == 1 and 0 < data.mean[0] < 0.5  # gray repeated: equal channel statistics


def test_preprocess_resizes_and_normalizes_with_the_dataset_statistics(spec_of: Callable[..., object]) -> None:
    spec = spec_of(c=1, h=32, w=32)
    data = load_data(DigitsData(kind="digits"), spec)  # type: ignore[arg-type]
    prep = preprocess_for(data.mean, data.std, (32, 32), Augment(), torch.device("cpu"))
    all_train = next(iter(data.train.batches([torch.arange(len(data.train))])))[0]
    x = prep(all_train)
    assert x.shape == (len(data.train), 1, 32, 32)
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.15  # about standardized


# --- augmentation and order ------------------------------------------------------------------------------


def test_augmentation_is_seeded_per_batch_and_off_for_evaluation() -> None:
    prep = Preprocess((8, 8), torch.zeros(3, 1, 1), torch.ones(3, 1, 1), Augment(crop_padding=0.25, hflip=True))
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    plain = images.float() / 255
    assert torch.equal(prep(images), plain)  # evaluation: no augmentation
    a, b, c = prep(images, generator(0, 1, 2)), prep(images, generator(0, 1, 2)), prep(images, generator(0, 1, 3))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)


def test_random_crop_shifts_each_image_and_fills_with_zeros() -> None:
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).repeat(64, 2, 1, 1)
    out = random_crop(x, (1, 1), generator(7))
    padded = torch.nn.functional.pad(x[0, 0], (1, 1, 1, 1))
    shifts = {(dy, dx): padded[1 + dy : 5 + dy, 1 + dx : 5 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    used = set()
    for img in out:
        assert torch.equal(img[0], img[1])  # one shift per image, for all its channels
        used |= {s for s, crop in shifts.items() if torch.equal(img[0], crop)}
    assert all(any(torch.equal(img[0], crop) for crop in shifts.values()) for img in out)
    assert len(used) >= 5  # images got different shifts


# --- fake ------------------------------------------------------------------------------------------


def test_fake_data_has_the_spec_shape_and_class_count(spec_of: Callable[..., object]) -> None:
    fake = FakeData(kind="fake", train_size=20, test_size=6, val_fraction=0)
    data = load_data(fake, spec_of(c=1, h=12, w=10, classes=4))  # type: ignore[arg-type]
    images, labels = first_batch(data, "test", 6)
    assert images.shape == (6, 1, 12, 10) and (len(data.train), len(data.test)) == (20, 6)
    assert int(labels.max()) < 4 and data.num_classes == 4


def test_a_spec_with_other_channels_or_too_few_classes_is_refused(spec_of: Callable[..., object]) -> None:
    with pytest.raises(ConfigProblems) as exc:
        load_data(FakeData(kind="fake"), spec_of(c=4))  # type: ignore[arg-type]
    assert exc.value.problems[0].path == ("input", "channels")
    with pytest.raises(ConfigProblems) as exc:
        load_data(DigitsData(kind="digits"), spec_of(classes=9))  # type: ignore[arg-type]
    assert exc.value.problems[0].path == ("num_classes",) and "has 10 classes" in exc.value.problems[0].message


# --- image_folder ------------------------------------------------------------------------------------


def make_tree(root: Path, splits: dict[str, dict[str, int]], size: tuple[int, int] = (20, 14)) -> Path:
    """root/<split>/<class>/<i>.png, RGB images of one color per class."""
    colors = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}
    for split, classes in splits.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", size, colors[name]).save(root / split / name / f"{i}.png")
    return root


def test_image_folder_decodes_resizes_and_converts_to_gray(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    root = make_tree(tmp_path / "tree", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 1, "dog": 1}})
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=False)
    data = load_data(config, spec_of(c=1, h=8, w=6, classes=2))  # type: ignore[arg-type]
    assert isinstance(data.train, FolderSplit) and (len(data.train), len(data.val), data.num_classes) == (5, 2, 2)
    assert data.test is None  # val/ is validation, never test
    images, labels = first_batch(data, "train", 5)
    assert images.shape == (5, 1, 8, 6) and images.dtype == torch.uint8 and labels.tolist() == [0, 0, 0, 1, 1]
    red_luma = round(0.299 * 200 + 0.587 * 30 + 0.114 * 30)
    assert abs(int(images[0, 0, 4, 3]) - red_luma) <= 1


def test_image_folder_with_workers_gives_the_same_batches(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    root = make_tree(tmp_path / "tree", {"train": {"cat": 3, "dog": 3}, "test": {"cat": 1, "dog": 1}})
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=False, val_fraction=0)
    spec = spec_of(classes=2)
    order = epoch_batches(Dist(), 6, 4, seed=0, epoch=0)
    serial = list(load_data(config, spec).train.batches(order))  # type: ignore[arg-type]
    parallel = list(load_data(config, spec, workers=2).train.batches(order))  # type: ignore[arg-type]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(serial, parallel))


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": {"cat": 1}}, "lacks a train/ or a test/ (val/) subfolder"),
        ({"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "eel": 1}}, "they must match"),
        ({"train": {}, "test": {"cat": 1}}, "class folder"),
    ],
)
def test_image_folder_layout_problems_are_reported_at_root(
    tmp_path: Path, spec_of: Callable[..., object], splits: dict[str, dict[str, int]], message: str
) -> None:
    root = make_tree(tmp_path / "tree", splits)
    (root / "train").mkdir(exist_ok=True)
    with pytest.raises(ConfigProblems) as exc:
        load_data(ImageFolderData(kind="image_folder", root=str(root)), spec_of())  # type: ignore[arg-type]
    assert exc.value.problems[0].path == ("training", "dataset", "root") and message in str(exc.value)


@pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="needs the CIFAR-10 JPEG tree in ../shared/datasets/cifar10")
def test_the_shared_cifar10_jpeg_tree_loads_as_an_image_folder(spec_of: Callable[..., object]) -> None:
    config = ImageFolderData(kind="image_folder", root=str(SHARED_CIFAR), in_memory=False)  # no 60,000 decodes here
    data = load_data(config, spec_of(h=32, w=32))  # type: ignore[arg-type]
    assert (len(data.train), len(data.val), len(data.test), data.num_classes) == (45_000, 5_000, 10_000, 10)
    images, _ = first_batch(data, "test")
    assert images.shape == (4, 3, 32, 32)


# --- image_folder in memory, cached on disk ----------------------------------------------------------


def noisy_tree(root: Path) -> Path:
    """root/{train,test}/<class>/<i>.png of random pixels (so a wrong crop or order would show)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 1)):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count DecodedImages.__getitem__ calls (in this process: workers=0)."""
    calls: list[int] = []
    decode = splits_module.DecodedImages.__getitem__

    def counted(self: splits_module.DecodedImages, index: int) -> tuple[torch.Tensor, int]:
        calls.append(index)
        return decode(self, index)

    monkeypatch.setattr(splits_module.DecodedImages, "__getitem__", counted)
    return calls


def in_memory(root: Path, spec: object) -> Data:
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=True, val_fraction=0)
    return load_data(config, spec)  # type: ignore[arg-type]


@pytest.mark.parametrize("channels", [1, 3])
def test_in_memory_images_equal_the_per_sample_decoded_ones(
    tmp_path: Path, spec_of: Callable[..., object], channels: int
) -> None:
    root = noisy_tree(tmp_path / "tree")
    spec = spec_of(c=channels, h=8, w=9, classes=2)
    held = in_memory(root, spec)
    per_sample = load_data(ImageFolderData(kind="image_folder", root=str(root), in_memory=False, val_fraction=0), spec)  # type: ignore[arg-type]
    assert isinstance(held.train, TensorSplit) and isinstance(per_sample.train, FolderSplit)
    for split in ("train", "test"):
        a, b = first_batch(held, split, 6), first_batch(per_sample, split, 6)
        assert a[0].shape == (6 if split == "train" else 2, channels, 8, 9)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_second_load_comes_from_the_cache_without_decoding(
    tmp_path: Path, spec_of: Callable[..., object], monkeypatch: pytest.MonkeyPatch, image_cache: Path
) -> None:
    root, spec = noisy_tree(tmp_path / "tree"), spec_of(classes=2)
    calls = count_decodes(monkeypatch)
    first = in_memory(root, spec)
    assert len(calls) == 8 and len(list(image_cache.glob("*.safetensors"))) == 1
    calls.clear()
    second = in_memory(root, spec)
    assert calls == [] and torch.equal(first.train.images, second.train.images)  # type: ignore[attr-defined]
    assert (first.mean, first.std) == (second.mean, second.std)
    in_memory(root, spec_of(classes=2, h=12))  # other decode settings: another key
    assert len(calls) == 8 and len(list(image_cache.glob("*.safetensors"))) == 2


def test_a_changed_image_changes_the_cache_key(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    root, spec = noisy_tree(tmp_path / "tree"), spec_of(classes=2)
    before = in_memory(root, spec).train.images  # type: ignore[attr-defined]
    Image.new("RGB", (10, 12), (255, 255, 255)).save(root / "train" / "cat" / "0.png")  # other size and content
    after = in_memory(root, spec).train.images  # type: ignore[attr-defined]
    assert int(after[0].min()) == 255 and not torch.equal(before[0], after[0])
    assert torch.equal(before[1:], after[1:])


@pytest.mark.parametrize("damage", [b"", b"not a safetensors file", b"\x10\x00\x00\x00\x00\x00\x00\x00{}"])
def test_a_damaged_cache_file_is_rebuilt_not_a_crash(
    tmp_path: Path, spec_of: Callable[..., object], monkeypatch: pytest.MonkeyPatch, image_cache: Path,
    damage: bytes,
) -> None:
    root, spec = noisy_tree(tmp_path / "tree"), spec_of(classes=2)
    good = in_memory(root, spec).train.images  # type: ignore[attr-defined]
    (cached,) = image_cache.glob("*.safetensors")
    cached.write_bytes(damage)
    calls = count_decodes(monkeypatch)
    assert torch.equal(in_memory(root, spec).train.images, good)  # type: ignore[attr-defined]
    assert len(calls) == 8 and cached.stat().st_size > 100  # decoded again, and the cache rewritten


def test_in_memory_auto_follows_the_size_rule(
    tmp_path: Path, spec_of: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, spec = noisy_tree(tmp_path / "tree"), spec_of(c=3, h=10, w=10, classes=2)
    config = ImageFolderData(kind="image_folder", root=str(root), val_fraction=0)
    decoded = 8 * 3 * 10 * 10  # bytes of the 8 images as uint8
    monkeypatch.setattr(cache_module, "available_memory", lambda: int(decoded / cache_module.IN_MEMORY_FRACTION))
    assert isinstance(load_data(config, spec).train, TensorSplit)  # type: ignore[arg-type]
    monkeypatch.setattr(cache_module, "available_memory", lambda: int(decoded / cache_module.IN_MEMORY_FRACTION) - 1)
    assert isinstance(load_data(config, spec).train, FolderSplit)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_batch_augmentation_matches_torchvision_per_sample_semantics(mode: str) -> None:
    """RandomCrop(padding=p) with zero fill (or padding_mode reflect), then RandomHorizontalFlip,
    then Normalize: every augmented image is one of those torchvision can produce from the same image."""
    from torchvision.transforms.v2 import functional as TF

    images = torch.randint(0, 256, (32, 3, 6, 6), dtype=torch.uint8)
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    augment = Augment(crop_padding=1 / 3, hflip=True, padding_mode=mode)  # type: ignore[arg-type]
    out = Preprocess((6, 6), mean, std, augment)(images, generator(3))
    flips = 0
    for image, got in zip(images, out):
        padded = TF.pad(TF.to_dtype(image, torch.float32, scale=True), [2, 2, 2, 2], fill=0.0,
                        padding_mode="constant" if mode == "zeros" else "reflect")
        crops = [padded[:, y : y + 6, x : x + 6] for y in range(5) for x in range(5)]
        candidates = [(c - mean) / std for crop in crops for c in (crop, TF.horizontal_flip(crop))]
        hits = [i for i, c in enumerate(candidates) if torch.allclose(got, c, atol=1e-6)]
        assert hits, "an augmented image no torchvision crop+flip produces"
        flips += all(i % 2 for i in hits)
    assert 5 <= flips <= 27  # about half flipped


def test_reflect_padding_mirrors_the_image_into_the_gap() -> None:
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = random_crop(x, (1, 1), generator(7), "reflect")
    padded = torch.nn.functional.pad(x[:1], (1, 1, 1, 1), mode="reflect")[0, 0]
    assert padded[0, 0] == x[0, 0, 1, 1]  # mirrored about the edge pixel, not repeating it
    crops = [padded[y : y + 4, w : w + 4] for y in range(3) for w in range(3)]
    assert all(any(torch.equal(img[0], c) for c in crops) for img in out)
    assert not (out == 0).any()  # nothing zero-filled


def test_alternating_flips_flip_each_image_on_every_other_epoch() -> None:
    phases = flip_phases(100, seed=3)
    assert torch.equal(phases, flip_phases(100, seed=3)) and not torch.equal(phases, flip_phases(100, seed=4))
    assert 30 <= int(phases.sum()) <= 70  # a random start per image
    idx = torch.tensor([5, 0, 99, 5])
    even, odd = alternate_flips(phases, idx, 0), alternate_flips(phases, idx, 1)
    assert torch.equal(even, phases[idx]) and torch.equal(odd, ~even)  # every image seen both ways in 2 epochs
    assert torch.equal(alternate_flips(phases, idx, 2), even)

    prep = Preprocess((4, 4), torch.zeros(1, 1, 1), torch.ones(1, 1, 1),
                      Augment(crop_padding=0, hflip=True, hflip_mode="alternate"))
    images = torch.randint(0, 256, (4, 1, 4, 4), dtype=torch.uint8)
    flips = torch.tensor([True, False, False, True])
    got = prep(images, generator(0, 1, 2), flips)
    plain = images.float() / 255
    assert torch.equal(got, torch.where(flips[:, None, None, None], plain.flip(3), plain))
    with pytest.raises(ValueError, match="alternate needs"):
        prep(images, generator(0, 1, 2))


# --- cifar10 -------------------------------------------------------------------------------------------


def write_cifar(root: Path, per_batch: int = 4) -> Path:
    """A tiny CIFAR-10 in torchvision's python layout (bytes keys, as in the real Python 2 pickles)."""
    folder = root / CIFAR_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = 10 * i  # red plane of batch i marks where a sample came from
        batch = {b"data": data, b"labels": [(i + j) % 10 for j in range(per_batch)], b"batch_label": b"x"}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_cifar10_reads_the_pickle_batches(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    root = write_cifar(tmp_path / "cifar")
    data = load_data(Cifar10Data(kind="cifar10", root=str(root), val_fraction=0), spec_of(h=32, w=32))  # type: ignore[arg-type]
    assert isinstance(data.train, TensorSplit) and (len(data.train), len(data.test)) == (20, 4)
    assert data.train.images.shape == (20, 3, 32, 32)
    assert data.train.images[:, 0, 0, 0].tolist() == [0] * 4 + [10] * 4 + [20] * 4 + [30] * 4 + [40] * 4
    assert data.test.labels.tolist() == [5, 6, 7, 8] and int(data.test.images[0, 0, 5, 5]) == 50
    gray = load_data(Cifar10Data(kind="cifar10", root=str(root / CIFAR_DIR), val_fraction=0), spec_of(c=1, h=24, w=24))  # type: ignore[arg-type]
    assert gray.train.images.shape == (20, 1, 32, 32)  # converted once; resized per batch


def test_cifar10_without_files_says_how_to_get_them(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    with pytest.raises(ConfigProblems) as exc:
        load_data(Cifar10Data(kind="cifar10", root=str(tmp_path)), spec_of())  # type: ignore[arg-type]
    (problem,) = exc.value.problems
    assert problem.path == ("training", "dataset", "root")
    assert "no CIFAR-10 files" in problem.message and "download: true" in problem.message


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, ("touch PWNED",)


def test_a_cifar10_batch_that_would_run_code_is_refused(
    tmp_path: Path, spec_of: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_cifar(tmp_path / "cifar")
    (root / CIFAR_DIR / "data_batch_3").write_bytes(pickle.dumps({b"data": _Boom(), b"labels": []}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigProblems, match=r"refused .*data_batch_3: it would import posix\.system"):
        load_data(Cifar10Data(kind="cifar10", root=str(root)), spec_of())  # type: ignore[arg-type]
    assert not (tmp_path / "PWNED").exists()


def test_every_dataset_kind_is_a_valid_config() -> None:
    for kind in ("digits", "cifar10", "fake"):
        assert TrainingConfig.model_validate({"dataset": {"kind": kind}}).dataset.kind == kind


@pytest.mark.parametrize("workers", [0, 1])
def test_an_image_that_cannot_be_decoded_is_one_clear_line(
    tmp_path: Path, spec_of: Callable[..., object], workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path / "tree", {"train": {"cat": 1, "dog": 1}, "test": {"cat": 1, "dog": 1}})
    (root / "train" / "dog" / "0.png").write_bytes(b"not a png")
    monkeypatch.setattr(splits_module, "STATS_SAMPLE", 1)  # the statistics see only the first image
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=False, val_fraction=0)
    data = load_data(config, spec_of(classes=2), workers)  # type: ignore[arg-type]
    with pytest.raises(BadImageError) as exc:
        list(data.train.batches(eval_indices(Dist(), 2, 2)))
    (line,) = exc.value.lines()
    assert line.startswith(f"error: {root / 'train' / 'dog' / '0.png'}: cannot read image: ")
    with pytest.raises(BadImageError) as exc:  # in memory, every image is decoded while loading
        load_data(config.model_copy(update={"in_memory": True}), spec_of(classes=2), workers)  # type: ignore[arg-type]
    (line,) = exc.value.lines()
    assert line.startswith(f"error: {root / 'train' / 'dog' / '0.png'}: cannot read image: ")


def test_in_memory_splits_move_to_the_training_device_once() -> None:
    data = Data("t", TensorSplit(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4)), None,
                TensorSplit(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.arange(2)), ("a", "b", "c", "d"),
                (0.5,), (0.2,))
    assert on_device(data, torch.device("cpu")) is data
    moved = on_device(data, torch.device("meta"))  # stands in for a GPU: no copy back per batch
    assert isinstance(moved.train, TensorSplit) and moved.train.images.is_meta and moved.test.labels.is_meta
    images, labels = next(moved.train.batches([torch.tensor([0, 2])]))
    assert images.is_meta and images.shape == (2, 1, 2, 2) and labels.shape == (2,)


@pytest.mark.slow
def test_image_folder_val_is_validation_and_test_is_test(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    root = make_tree(tmp_path / "a", {"train": {"cat": 10, "dog": 10}, "val": {"cat": 1, "dog": 2}, "test": {"cat": 2}})
    (root / "test" / "dog").mkdir()
    (root / "test" / "dog" / "0.png").write_bytes((root / "train" / "dog" / "0.png").read_bytes())
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=False)
    data = load_data(config, spec_of(classes=2))  # type: ignore[arg-type]
    assert data.val is not None and data.test is not None
    assert (len(data.train), len(data.val), len(data.test)) == (20, 3, 3)  # nothing carved: val/ is shipped
    carved = make_tree(tmp_path / "b", {"train": {"cat": 10, "dog": 10}, "test": {"cat": 1, "dog": 1}})
    data = load_data(config.model_copy(update={"root": str(carved)}), spec_of(classes=2))  # type: ignore[arg-type]
    assert data.val is not None and (len(data.train), len(data.val)) == (18, 2)
    assert sorted(data.val.targets.tolist()) == [0, 1]  # stratified: one of each class


@pytest.mark.slow
def test_image_folder_scan_matches_torchvision_and_refuses_loops_and_dangling_links(
    tmp_path: Path, spec_of: Callable[..., object]
) -> None:
    from torchvision.datasets import ImageFolder

    from training.data.image_folder import image_folder

    root = make_tree(tmp_path / "t", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}})
    (root / "train" / "cat" / "a-b").mkdir()
    (root / "train" / "cat" / "a").mkdir()
    (root / "train" / "cat" / "a" / "x.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    (root / "train" / "cat" / "a-b" / "y.PNG").write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    ours, theirs = image_folder(root / "train"), ImageFolder(str(root / "train"))
    assert ours.classes == theirs.classes and ours.samples == theirs.samples
    config = ImageFolderData(kind="image_folder", root=str(root), in_memory=False)
    (root / "train" / "dog" / "loop").symlink_to(root / "train" / "dog")
    with pytest.raises(ConfigProblems, match="reached twice through symlinks"):
        load_data(config, spec_of(classes=2))  # type: ignore[arg-type]
    (root / "train" / "dog" / "loop").unlink()
    (root / "train" / "dog" / "gone.png").symlink_to(tmp_path / "missing.png")
    with pytest.raises(ConfigProblems, match=r"gone\.png is a dangling symlink"):
        load_data(config, spec_of(classes=2))  # type: ignore[arg-type]


def test_a_cifar10_label_out_of_range_is_refused(tmp_path: Path, spec_of: Callable[..., object]) -> None:
    root = write_cifar(tmp_path / "cifar")
    batch = root / CIFAR_DIR / "data_batch_3"
    data = pickle.loads(batch.read_bytes(), encoding="bytes")
    data[b"labels"][1] = 10
    batch.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(ConfigProblems, match=r"data_batch_3 is not a CIFAR-10 batch .* 'labels' 0\.\.9"):
        load_data(Cifar10Data(kind="cifar10", root=str(root)), spec_of(h=32, w=32))  # type: ignore[arg-type]
