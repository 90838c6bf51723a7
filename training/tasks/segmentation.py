"""Semantic segmentation: a class per pixel, from one confusion matrix per split.

Outputs are logits (N, C, H, W) at the masks' size; targets are int64 index masks (N, H, W)
in which `ignore_index` (and any value outside 0..classes-1) marks pixels that count for
nothing. One output channel is binary segmentation (classes background, foreground): its
loss is BCE with logits and a pixel is foreground where the logit is > 0 (sigmoid > 0.5);
several channels are one class each: cross-entropy, and the argmax. Dice (soft, on the
probabilities) may replace or join the cross-entropy (`loss: ce | dice | ce+dice`).

Losses are per image (the mean over its counted pixels), so a split's loss is the mean over its
images. The tally is the (true, predicted) confusion matrix of the counted pixels; mean IoU,
Dice and pixel accuracy come from the matrix summed over the whole split (and over the ranks
of a distributed run), as MMSegmentation and torchmetrics' Jaccard index compute them: a
class absent from both truth and prediction is left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from training.errors import ConfigProblems, RunDirError
from training.runinfo import LoadedRun
from training.tasks import TASKS
from training.tasks.base import PredictRequest, TaskKind, write_table

if TYPE_CHECKING:
    from PIL.Image import Image

    from training.config import TrainingConfig

Loss = Literal["ce", "dice", "ce+dice"]
DICE_SMOOTH = 1.0  # added to the soft Dice's numerator and denominator: an empty class scores 1, not 0/0


class SegmentationTask:
    """Per-pixel logits (N, C, H, W) against index masks (N, H, W)."""

    pictured = True

    def __init__(self, classes: tuple[str, ...], ignore_index: int = 255, loss: Loss = "ce",
                 palette: Sequence[Sequence[int]] | None = None) -> None:
        self.kind: TaskKind = TASKS["segmentation"]
        self.classes, self.ignore_index, self.loss_kind = classes, ignore_index, loss
        self.palette = [list(c) for c in palette] if palette is not None else default_palette(len(classes))

    @classmethod
    def of(cls, config: TrainingConfig, classes: tuple[str, ...]) -> SegmentationTask:
        """The task of a segmentation dataset's config (its ignore index, loss and palette)."""
        data: Any = config.dataset  # a segmentation dataset kind (training.config)
        return cls(classes, data.ignore_index, data.loss, data.palette)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def tally_size(self) -> int:
        return self.num_classes * self.num_classes

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.image_losses(outputs, targets).mean()

    def loss_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return self.image_losses(outputs, targets).sum()

    def image_losses(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """(N,) float32: each image's loss over its counted pixels."""
        check_outputs(outputs, targets)
        logits, valid = outputs.float(), self.counted(targets)
        total = torch.zeros(len(targets), device=outputs.device)
        if self.loss_kind in ("ce", "ce+dice"):
            total = total + cross_entropy(logits, targets, valid)
        if self.loss_kind in ("dice", "ce+dice"):
            total = total + dice_loss(logits, targets, valid)
        return total

    def counted(self, targets: Tensor) -> Tensor:
        """(N, H, W) bool: the pixels that count (a class index, not ignore_index)."""
        return (targets >= 0) & (targets < self.num_classes) & (targets != self.ignore_index)

    def predicted(self, outputs: Tensor) -> Tensor:
        """(N, H, W) int64 class indices: logit > 0 for one channel, else the argmax."""
        # max(1).indices: the same first maximal index as argmax(1), ~20x faster on CPU for
        # (N, C, H, W) logits (argmax over a non-last dimension is a slow strided reduction)
        return (outputs[:, 0] > 0).long() if outputs.shape[1] == 1 else outputs.max(1).indices

    def tally(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The (true, predicted) confusion matrix of the counted pixels, flattened (C*C,), int64.
        A scatter-add, not bincount: bincount reads its size from the device (a host sync)."""
        n = self.num_classes
        valid = self.counted(targets)
        index = torch.where(valid, targets.clamp(0, n - 1) * n + self.predicted(outputs).clamp(0, n - 1), n * n)
        counts = torch.zeros(n * n + 1, dtype=torch.int64, device=outputs.device)
        counts.scatter_add_(0, index.reshape(-1), torch.ones_like(index).reshape(-1))
        return counts[: n * n]

    def summarize(self, tally: Sequence[float], samples: int) -> dict[str, float]:
        return scores(confusion_matrix(tally, self.num_classes))

    def describe(self) -> dict[str, Any]:
        return {"task": "segmentation", "classes": list(self.classes), "ignore_index": self.ignore_index,
                "palette": self.palette}

    def picture(self, forward: Any, images: Tensor, targets: Tensor) -> Tensor | None:
        """image | true mask | predicted mask, one row per image, in the palette's colours."""
        from training.tasks.overlays import strips

        predicted = self.predicted(forward(images).float())
        return strips(images.cpu(), targets.cpu(), predicted.cpu(), self.palette)

    def keeper(self) -> Kept:
        return Kept(self)

    def report(self, kept: Any, loss: float, metrics: dict[str, float], run: LoadedRun,
               out_dir: Path) -> tuple[dict[str, Any], list[str]]:
        """per_class.csv (IoU, Dice, support per class), confusion.csv and .png (pixels) and
        worst.png (the images of lowest mIoU: image | truth | prediction overlays)."""
        from training.plots import plot_confusion, plot_worst

        matrix = kept.matrix
        rows = per_class(matrix, self.classes)
        write_table(out_dir / "per_class.csv", list(rows[0]), [list(r.values()) for r in rows])
        write_table(out_dir / "confusion.csv", ["true \\ predicted", *self.classes],
                    [[name, *matrix[i].tolist()] for i, name in enumerate(self.classes)])
        plot_confusion(out_dir / "confusion.png", matrix, self.classes, rates=True)
        worst = kept.worst
        plot_worst(out_dir / "worst.png", worst.pictures(self.palette), self.classes, self.palette)
        result = {**metrics, "loss": loss, "num_samples": kept.images, "num_classes": self.num_classes,
                  "iou": {r["class"]: r["iou"] for r in rows},
                  "worst": [{"image": int(i), "miou": float(v)} for i, v in zip(worst.index, worst.score)]}
        return result, ["per_class.csv", "confusion.csv", "confusion.png", "worst.png"]

    def result_line(self, result: dict[str, Any]) -> str:
        return (f"on {result['num_samples']:,} images: mIoU {result['miou']:.4f}  Dice {result['dice']:.4f}  "
                f"pixel accuracy {100 * result['pixel_acc']:.2f}%  loss {result['loss']:.4f}")

    def predict(self, run: LoadedRun, request: PredictRequest) -> tuple[list[str], list[str]]:
        """A mask PNG and an overlay PNG per image into request.output, and fractions.csv."""
        from training.segment import predict_masks

        return predict_masks(self, run, request)

    def image_scores(self, predicted: Tensor, targets: Tensor) -> Tensor:
        """(N,) float64: each image's mIoU over the classes in its truth or prediction (1 when
        it has no counted pixels)."""
        n, count = self.num_classes, len(targets)
        valid = self.counted(targets)
        offset = torch.arange(count, device=targets.device).view(-1, 1, 1) * n * n
        index = torch.where(valid, offset + targets.clamp(0, n - 1) * n + predicted.clamp(0, n - 1), count * n * n)
        counts = torch.zeros(count * n * n + 1, dtype=torch.float64, device=targets.device)
        counts.scatter_add_(0, index.reshape(-1), torch.ones_like(index, dtype=torch.float64).reshape(-1))
        m = counts[: count * n * n].view(count, n, n)
        hit = m.diagonal(dim1=1, dim2=2)
        union = m.sum(1) + m.sum(2) - hit
        present = union > 0
        iou = torch.where(present, hit / union.clamp(min=1), 0.0).sum(1)
        return torch.where(present.any(1), iou / present.sum(1).clamp(min=1), 1.0)


WORST = 8  # images in worst.png


@dataclass(frozen=True)
class Worst:
    """The WORST images of a split by mIoU so far (CPU): uint8 images, true and predicted masks,
    their scores (ascending) and indices in the split."""

    images: Tensor
    truth: Tensor
    predicted: Tensor
    score: Tensor
    index: Tensor

    def merged(self, other: Worst) -> Worst:
        """The WORST of both; ties go to the earlier image."""
        both = [torch.cat([a, b]) if len(a) else b for a, b in zip(self.parts(), other.parts())]
        order = torch.sort(both[3], stable=True).indices[:WORST]
        return Worst(*(t[order] for t in both))

    def parts(self) -> tuple[Tensor, ...]:
        return self.images, self.truth, self.predicted, self.score, self.index

    def pictures(self, palette: Sequence[Sequence[int]]) -> list[tuple[str, Tensor, Tensor, Tensor]]:
        """(title, image, truth overlay, prediction overlay) per image, uint8 (3, H, W) each."""
        from training.tasks.overlays import overlay, rgb

        truth, found = overlay(self.images, self.truth, palette), overlay(self.images, self.predicted, palette)
        return [(f"image {int(i)}, mIoU {float(s):.3f}", rgb(self.images[k : k + 1])[0], truth[k], found[k])
                for k, (i, s) in enumerate(zip(self.index, self.score))]


def no_worst() -> Worst:
    empty = torch.zeros(0)
    return Worst(empty, empty, empty, torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.int64))


@dataclass
class Kept:
    """What the segmentation report keeps of a split: the confusion matrix, the image count and
    the worst images."""

    task: SegmentationTask
    matrix: Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.int64))
    images: int = 0
    worst: Worst = field(default_factory=no_worst)

    def add(self, images: Tensor, outputs: Tensor, targets: Tensor) -> None:
        n = self.task.num_classes
        counts = self.task.tally(outputs, targets).cpu().view(n, n)
        self.matrix = counts if self.images == 0 else self.matrix + counts
        predicted = self.task.predicted(outputs)
        scores = self.task.image_scores(predicted, targets).cpu()
        index = torch.arange(self.images, self.images + len(images))
        self.worst = self.worst.merged(Worst(images.cpu(), targets.cpu(), predicted.cpu(), scores, index))
        self.images += len(images)


def check_outputs(outputs: Tensor, targets: Tensor) -> None:
    """A per-pixel map at the masks' size, or one located error (a classifier spec, say)."""
    if outputs.ndim != 4 or outputs.shape[-2:] != targets.shape[-2:]:
        h, w = targets.shape[-2:]
        raise ConfigProblems.at(("training", "dataset", "kind"), (
            f"a segmentation dataset needs a model whose output is a per-pixel map (N, classes, {h}, {w}) at the "
            f"masks' size {h}x{w}, but the spec's model outputs {tuple(outputs.shape)}"))


def cross_entropy(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """(N,) mean over each image's counted pixels: BCE with logits for one channel, else softmax CE."""
    if logits.shape[1] == 1:
        pixels = F.binary_cross_entropy_with_logits(logits[:, 0], (targets == 1).float(), reduction="none")
    else:
        safe = torch.where(valid, targets, 0)  # any index: the pixel is masked out below
        pixels = F.cross_entropy(logits, safe, reduction="none")
    return per_image_mean(pixels, valid)


def per_image_mean(pixels: Tensor, valid: Tensor) -> Tensor:
    weights = valid.float()
    return (pixels * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1)


def dice_loss(logits: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
    """(N,) 1 - soft Dice over the counted pixels: of the foreground for one channel, else the
    mean over the classes of softmax probabilities against one-hot masks."""
    weights = valid.float().unsqueeze(1)  # (N, 1, H, W)
    if logits.shape[1] == 1:
        probs, truth = logits.sigmoid(), (targets == 1).float().unsqueeze(1)
    else:
        probs = logits.softmax(1)
        truth = F.one_hot(torch.where(valid, targets, 0), logits.shape[1]).permute(0, 3, 1, 2).float()
    probs, truth = probs * weights, truth * weights
    inter = (probs * truth).flatten(2).sum(2)
    denom = probs.flatten(2).sum(2) + truth.flatten(2).sum(2)
    return 1 - ((2 * inter + DICE_SMOOTH) / (denom + DICE_SMOOTH)).mean(1)


def confusion_matrix(tally: Sequence[float], n: int) -> Tensor:
    """The flattened tally as an (n, n) float64 matrix, rows true, columns predicted."""
    return torch.tensor(list(tally), dtype=torch.float64).view(n, n)


def class_scores(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(IoU, Dice, present) per class; present: in truth or prediction (else left out of means)."""
    m = matrix.double()
    hit = m.diagonal()
    union = m.sum(0) + m.sum(1) - hit
    present = union > 0
    iou = torch.where(present, hit / union.clamp(min=1), 0.0)
    dice = torch.where(present, 2 * hit / (union + hit).clamp(min=1), 0.0)
    return iou, dice, present


def scores(matrix: Tensor) -> dict[str, float]:
    """miou, dice (means over the present classes) and pixel_acc of a confusion matrix; 0 when empty."""
    iou, dice, present = class_scores(matrix)
    count = max(int(present.sum()), 1)
    total = float(matrix.sum())
    return {"miou": float(iou.sum()) / count, "dice": float(dice.sum()) / count,
            "pixel_acc": float(matrix.double().diagonal().sum()) / total if total else 0.0}


def per_class(matrix: Tensor, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """IoU, Dice and support (true pixels) per class; IoU and Dice None where the class is absent."""
    iou, dice, present = class_scores(matrix)
    support = matrix.sum(1)
    return [{"class": name, "iou": float(iou[i]) if present[i] else None,
             "dice": float(dice[i]) if present[i] else None, "support": int(support[i])}
            for i, name in enumerate(classes)]


def default_palette(n: int) -> list[list[int]]:
    """n distinct RGB colours, black first (PASCAL VOC's colour map: class bits spread over the
    high bits of R, G and B); two classes are black and white."""
    if n == 2:
        return [[0, 0, 0], [255, 255, 255]]
    colours = []
    for index in range(n):
        rgb, c = [0, 0, 0], index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((c >> channel) & 1) << shift
            c >>= 3
        colours.append(rgb)
    return colours


def segment_image(run: LoadedRun, image: Tensor | Image | str | Path) -> Tensor:
    """One image's classes, int64 (h, w) at its own size, as `predict` writes them: `image` a
    path, a PIL image or a uint8 tensor (C, h, w). A size the spec does not take is a RunDirError."""
    from training.config import TrainingConfig
    from training.data.splits import decode_image
    from training.segment import Sizes, segment

    if run.task != "segmentation":
        raise RunDirError(f"{run.info.get('spec', 'the run')} is a {run.task} run, not a segmentation run")
    task = SegmentationTask.of(TrainingConfig.model_validate(run.spec.training or {}), run.classes)
    if isinstance(image, Tensor):
        images = image[None] if image.ndim == 3 else image
    elif isinstance(image, (str, Path)):
        images = decode_image(str(image), run.preprocess.mode, None)[None]
    else:
        images = run.preprocess.decode_pil(image)  # at its own size: a segmentation run does not resize
    size = Sizes.of(run.spec).padded(images.shape[-2], images.shape[-1])
    if isinstance(size, str):
        raise RunDirError(size)
    device = next(run.model.parameters()).device
    return segment(task, run, images.to(device), size)[0].cpu()
