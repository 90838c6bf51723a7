"""Segmentation data: the synthetic shapes, image/mask folders and CSVs, mask decoding, joint
augmentation, bad input (one line, exit 2), and the trainer on masks with a hand-written model
(the spec language has no per-pixel head yet)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from builder.lang.loading import load_spec
from training import TrainingConfig, train
from training.checkpoint import CHECKPOINT, WEIGHTS, load_weights
from training.config import SegmentationAugment, ShapesData
from training.data import generator, load_data
from training.data.joint import augment_pairs, transform
from training.data.masks import MaskSplit
from training.data.shapes import generate
from training.errors import TrainingInterrupted
from training.runfiles import read_metrics
from training.tasks import TASKS
from training.trainer import Position, Trainer

Cli = Callable[..., tuple[int, str, str]]

SPEC = """\
name: seg_tiny
input: {{channels: {channels}, height: 16, width: 16}}
num_classes: {classes}
blocks:
  - {{out_channels: 4, kernel_size: 3, padding: 1}}
classifier: {{hidden: []}}
training:
  batch_size: 8
  epochs: 2
  threads: 1
  dataset: {dataset}
"""


def spec_file(tmp_path: Path, dataset: str, classes: int = 3, channels: int = 3) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(dataset=dataset, classes=classes, channels=channels))
    return path


def config_of(path: Path) -> TrainingConfig:
    return TrainingConfig.model_validate(load_spec(path).training or {})


# --- the synthetic shapes --------------------------------------------------------------------


def test_shapes_are_deterministic_per_seed_and_masks_hold_classes() -> None:
    a, b, c = generate(6, (32, 24), 4, 0.1, 5), generate(6, (32, 24), 4, 0.1, 5), generate(6, (32, 24), 4, 0.1, 6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    images, masks = a
    assert images.shape == (6, 3, 32, 24) and images.dtype == torch.uint8 and masks.shape == (6, 32, 24)
    assert set(masks.unique().tolist()) <= {0, 1, 2, 3} and (masks > 0).any(dim=(1, 2)).all()
    # Each class has its own colour: the pixels of a class are closer to their class mean than to another's.
    means = torch.stack([images.permute(0, 2, 3, 1)[masks == k].float().mean(0) for k in range(4)])
    assert (torch.cdist(means, means) + 1e3 * torch.eye(4)).min() > 60


def test_shapes_load_as_a_stratified_dataset(tmp_path: Path) -> None:
    path = spec_file(tmp_path, "{kind: shapes, train_size: 40, test_size: 12, val_fraction: 0.25}", 4, 1)
    data = load_data(config_of(path).dataset, load_spec(path))
    assert data.classes == ("background", "disc", "square", "triangle")
    assert (len(data.train), len(data.val or []), len(data.test or [])) == (30, 10, 12)
    assert isinstance(data.val, MaskSplit) and data.train.images.shape[1:] == (1, 16, 16)  # type: ignore[attr-defined]
    images, masks = next(data.train.batches([torch.arange(4)]))
    assert images.dtype == torch.uint8 and masks.dtype == torch.int64 and masks.shape == (4, 16, 16)
    assert config_of(path).monitor == "val_miou"


# --- files: folders and CSVs --------------------------------------------------------------------


def write_pair(image: Path, mask: Path, values: np.ndarray, mode: str = "L",
               size: tuple[int, int] | None = None) -> None:
    """An image whose gray level follows `values`, and its mask (L or P) of `values` (H, W)."""
    image.parent.mkdir(parents=True, exist_ok=True)
    mask.parent.mkdir(parents=True, exist_ok=True)
    h, w = size or values.shape
    Image.fromarray((np.resize(values, (h, w)) * 40 + 20).astype(np.uint8), "L").convert("RGB").save(image)
    picture = Image.fromarray(values.astype(np.uint8), "L")
    if mode == "P":
        picture = picture.convert("P")
        picture.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
        picture.putdata(list(values.astype(np.uint8).flatten()))
    picture.save(mask)


def mmseg_tree(root: Path, count: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("val", 2)):
        for i in range(n):
            values = rng.integers(0, 3, (20, 20))
            values[0, :4] = 255  # ignored pixels
            write_pair(root / "img_dir" / split / f"{i}.jpg", root / "ann_dir" / split / f"{i}.png", values,
                       mode="P" if i % 2 else "L")
    return root


def test_a_folder_pairs_images_and_masks_by_stem_and_keeps_class_values(tmp_path: Path) -> None:
    root = mmseg_tree(tmp_path / "data")
    path = spec_file(tmp_path, f"{{kind: seg_folder, root: {root}, classes: [sky, road, car]}}")
    data = load_data(config_of(path).dataset, load_spec(path))
    assert data.classes == ("sky", "road", "car") and data.test is None
    assert (len(data.train), len(data.val or [])) == (4, 2)
    masks = data.train.labels  # type: ignore[attr-defined]
    assert masks.shape == (4, 16, 16) and set(masks.unique().tolist()) <= {0, 1, 2, 255}
    # Nearest-neighbour resizing of the palette mask equals that of its values.
    values = np.asarray(Image.open(root / "ann_dir" / "train" / "1.png"))
    expected = np.asarray(Image.fromarray(values).resize((16, 16), Image.Resampling.NEAREST))
    assert np.array_equal(masks[1].numpy(), expected)


def test_a_csv_of_binary_masks_thresholds_at_half_of_255(tmp_path: Path) -> None:
    values = np.repeat(np.array([[0, 127, 128, 255]] * 16), 4, axis=1)  # 16x16
    rows = ["image,mask"]
    for i in range(6):
        write_pair(tmp_path / "img" / f"{i}.png", tmp_path / "mask" / f"{i}_mask.png", values)
        rows.append(f"img/{i}.png,mask/{i}_mask.png")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    path = spec_file(tmp_path, f"{{kind: seg_csv, root: {tmp_path / 'pairs.csv'}, masks: binary, val_fraction: 0.5}}",
                     classes=1)
    data = load_data(config_of(path).dataset, load_spec(path))
    assert data.classes == ("background", "foreground") and (len(data.train), len(data.val or [])) == (3, 3)
    masks = data.train.labels  # type: ignore[attr-defined]
    assert masks[0, 0].tolist() == [0] * 8 + [1] * 8  # 127 -> 0, 128 -> 1


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("size", "the mask is 20x20 but its image {root}/img_dir/train/0.jpg is 24x20"),
        ("value", "mask value 7 is not a class (0..2) nor ignore_index (255)"),
        ("missing", "{root}/img_dir/train/3.jpg has no mask: no 3.* in {root}/ann_dir/train"),
        ("channels", "the seg_folder masks have 3 classes (0, 1, 2) but the spec has 4 output channels; "
                     "set num_classes: 3"),
    ],
)
def test_bad_masks_are_one_line_and_exit_2(tmp_path: Path, cli: Cli, problem: str, message: str) -> None:
    root = mmseg_tree(tmp_path / "data")
    if problem == "size":
        write_pair(root / "img_dir" / "train" / "0.jpg", root / "ann_dir" / "train" / "0.png",
                   np.zeros((20, 20)), size=(20, 24))
    elif problem == "value":
        bad = np.zeros((20, 20))
        bad[3, 3] = 7
        write_pair(root / "img_dir" / "train" / "2.jpg", root / "ann_dir" / "train" / "2.png", bad)
    elif problem == "missing":
        (root / "ann_dir" / "train" / "3.png").unlink()
    path = spec_file(tmp_path, f"{{kind: seg_folder, root: {root}, num_classes: 3}}",
                     classes=4 if problem == "channels" else 3)
    code, _, err = cli("train", path, "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert message.format(root=root) in err and err.startswith(f"{path}:")


def test_a_csv_naming_a_missing_mask_is_one_line(tmp_path: Path, cli: Cli) -> None:
    write_pair(tmp_path / "a.png", tmp_path / "a_mask.png", np.zeros((16, 16)))
    (tmp_path / "pairs.csv").write_text("image,mask\na.png,a_mask.png\na.png,b_mask.png\n")
    path = spec_file(tmp_path, f"{{kind: seg_csv, root: {tmp_path / 'pairs.csv'}, masks: binary}}", classes=2)
    code, _, err = cli("train", path, "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'b_mask.png'} does not exist (the mask of {tmp_path / 'a.png'})" in err


# --- joint augmentation ------------------------------------------------------------------------


def square_batch(n: int = 6) -> tuple[Tensor, Tensor]:
    """Images with a bright off-centre rectangle (value 200 on 30) and masks of it (1 on 0)."""
    images = torch.full((n, 3, 32, 32), 30, dtype=torch.uint8)
    masks = torch.zeros(n, 32, 32, dtype=torch.int64)
    images[:, :, 4:14, 6:22] = 200
    masks[:, 4:14, 6:22] = 1
    return images, masks


def test_geometric_augmentation_moves_the_mask_with_the_image() -> None:
    augment = SegmentationAugment(hflip=True, vflip=True, rotate=40, scale=[0.7, 1.3], translate=0.2)
    images, masks = square_batch()
    out_images, out_masks = augment_pairs(images, masks, transform(augment, 255), generator(1, 2, 3))
    assert out_images.shape == images.shape and out_masks.dtype == torch.int64
    assert set(out_masks.unique().tolist()) <= {0, 1, 255}  # nearest: no blended class values
    assert (out_masks == 255).any()  # pixels the rotation uncovered count for nothing
    assert not torch.equal(out_masks, masks)
    for image, mask in zip(out_images, out_masks):
        bright, inside = image[0] > 115, mask == 1
        assert int((bright ^ inside)[mask != 255].sum()) <= 0.04 * 32 * 32  # the edges may differ by a pixel
        assert int(inside.sum()) > 40  # the rectangle is still there
    again = augment_pairs(images, masks, transform(augment, 255), generator(1, 2, 3))
    assert torch.equal(again[0], out_images) and torch.equal(again[1], out_masks)


def test_colour_jitter_touches_the_image_only() -> None:
    images, masks = square_batch()
    augment = SegmentationAugment(hflip=False, brightness=0.5, contrast=0.5, saturation=0.5)
    out_images, out_masks = augment_pairs(images, masks, transform(augment, 255), generator(0))
    assert torch.equal(out_masks, masks) and not torch.equal(out_images, images)


# --- the trainer on masks --------------------------------------------------------------------


class TinySegmenter(nn.Module):
    """Two 3x3 convolutions, then a 1x1 convolution to the classes at full resolution."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                  nn.ReLU(), nn.Dropout2d(0.1), nn.Conv2d(8, classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


@pytest.fixture
def segmenter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer.build makes a TinySegmenter for the spec's channels and classes."""

    def build(self: Trainer, resumed: bool) -> nn.Module:
        torch.manual_seed(self.config.seed)
        return TinySegmenter(self.spec.input.channels, self.spec.num_classes)

    monkeypatch.setattr(Trainer, "build", build)


SHAPES = ("{kind: shapes, num_classes: 3, train_size: 40, test_size: 16, "
          "augment: {rotate: 20, scale: [0.8, 1.2], brightness: 0.2}}")


def test_a_segmentation_run_logs_miou_and_keeps_the_best_by_it(tmp_path: Path, segmenter: None) -> None:
    path = spec_file(tmp_path, SHAPES)
    config = config_of(path).model_copy(update={"epochs": 3})
    lines: list[str] = []
    result = train(load_spec(path), config, out=tmp_path / "r", quiet=True, log=lines.append)
    rows = read_metrics(tmp_path / "r" / "metrics.csv")
    assert list(rows[0]) == list(TASKS["segmentation"].columns) and len(rows) == 3
    val = [float(r["val_miou"]) for r in rows]
    assert result.best_epoch == val.index(max(val)) + 1
    assert 0 < result.test_miou <= 1 and 0 < result.best_test_pixel_acc <= 1
    assert "val loss" in lines[1] and " miou " in lines[1] and "test mIoU" in lines[-1]
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["task"] == "segmentation" and info["classes"] == ["background", "disc", "square"]
    assert info["ignore_index"] == 255 and info["palette"][:2] == [[0, 0, 0], [128, 0, 0]]
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["best"]["monitor"] == "val_miou" and "test_dice" in results["best"]


def test_early_stopping_by_val_miou(tmp_path: Path, segmenter: None) -> None:
    path = spec_file(tmp_path, SHAPES)
    config = TrainingConfig.model_validate({**(load_spec(path).training or {}), "epochs": 6,
                                            "early_stopping": {"patience": 1, "min_delta": 0.5}})
    assert config.early_stopping is not None and config.early_stopping.metric == "val_miou"
    result = train(load_spec(path), config, out=tmp_path / "r", quiet=True, log=lambda _: None)
    assert result.stopped_early and result.epoch == 2  # a gain of 0.5 mIoU in one epoch: never


def test_an_interrupted_segmentation_run_resumes_bit_identical(
    tmp_path: Path, segmenter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = spec_file(tmp_path, SHAPES)
    spec, config = load_spec(path), config_of(path)
    train(spec, config, out=tmp_path / "straight", quiet=True, log=lambda _: None)
    add, steps = Position.add, {"n": 0}

    def add_then_signal(self: Position, *args: float) -> None:
        add(self, *args)  # type: ignore[arg-type]
        steps["n"] += 1
        if steps["n"] == 5 + 2:  # 36 training images, batch 8: 5 steps per epoch
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Position, "add", add_then_signal)
    with pytest.raises(TrainingInterrupted):
        train(spec, config, out=tmp_path / "split", quiet=True, log=lambda _: None)
    assert not (tmp_path / "split" / WEIGHTS).exists() and (tmp_path / "split" / CHECKPOINT).exists()
    monkeypatch.setattr(Position, "add", add)
    train(spec, config, resume=tmp_path / "split", quiet=True, log=lambda _: None)
    a, b = (load_weights(tmp_path / name / WEIGHTS) for name in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / n / "metrics.csv")]
               for n in ("straight", "split")]
    assert untimed[0] == untimed[1]


def test_a_segmentation_config_refuses_classification_metrics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown metric 'val_acc': the segmentation task logs val_loss, val_miou"):
        TrainingConfig.model_validate({"dataset": {"kind": "shapes"}, "monitor": "val_acc"})
    assert ShapesData(kind="shapes").task == "segmentation"


def test_a_segmentation_dataset_with_a_classifier_spec_is_one_line(tmp_path: Path, cli: Cli) -> None:
    path = spec_file(tmp_path, "{kind: shapes, num_classes: 3, train_size: 16, test_size: 8}")
    code, _, err = cli("train", path, "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "training.dataset.kind: a segmentation dataset needs a model whose output is a per-pixel map" in err
    assert "the spec's model outputs (8, 3)" in err


def test_a_classification_dataset_with_a_per_pixel_model_is_one_line(
    tmp_path: Path, segmenter: None, cli: Cli
) -> None:
    path = spec_file(tmp_path, "{kind: fake, train_size: 16, test_size: 8}", classes=3)
    code, _, err = cli("train", path, "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "outputs (8, 3, 16, 16) (per pixel: use a segmentation dataset)" in err
