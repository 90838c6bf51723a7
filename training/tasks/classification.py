"""Classification: one label per image, cross-entropy, top-1 accuracy.

The evaluate report adds what the trainer does not log: top-5, per-class precision/recall/F1/
support, a confusion matrix (CSV and PNG) and a grid of the most confidently wrong images;
predict writes a CSV of each image's most likely classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from training.runinfo import LoadedRun
from training.tasks import TASKS
from training.tasks.base import PredictRequest, TaskKind, write_table

WRONG_GRID = 16  # images in wrong.png
SHOWN = 20  # predictions printed when they are also written to a file


@dataclass(frozen=True)
class Outputs:
    """Every prediction of a split: logits (N, classes) as float32 on the CPU, and labels (N,)."""

    logits: Tensor
    labels: Tensor
    images: Tensor  # uint8 (N, C, h, w), kept for the picture of the wrong ones


@dataclass
class Kept:
    """The batches of a split as evaluate saw them (CPU copies)."""

    logits: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    images: list[Tensor] = field(default_factory=list)

    def add(self, images: Tensor, outputs: Tensor, targets: Tensor) -> None:
        self.logits.append(outputs.float().cpu())
        self.labels.append(targets.cpu())
        self.images.append(images.cpu())

    def outputs(self) -> Outputs:
        return Outputs(torch.cat(self.logits), torch.cat(self.labels), torch.cat(self.images))


class ClassificationTask:
    """Logits (N, classes) against int64 labels (N,)."""

    pictured = False

    def __init__(self, classes: tuple[str, ...], label_smoothing: float = 0.0) -> None:
        self.kind: TaskKind = TASKS["classification"]
        self.classes = classes
        self.label_smoothing = label_smoothing

    @property
    def tally_size(self) -> int:
        return 1

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        check_outputs(outputs, targets)
        return F.cross_entropy(outputs.float(), targets, label_smoothing=self.label_smoothing)

    def loss_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        check_outputs(outputs, targets)
        return F.cross_entropy(outputs.float(), targets, reduction="sum")  # never smoothed: the test loss

    def tally(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(1) == targets).sum().view(1)  # correct predictions

    def summarize(self, tally: Sequence[float], samples: int) -> dict[str, float]:
        return {"acc": tally[0] / max(samples, 1)}

    def describe(self) -> dict[str, Any]:
        return {"classes": list(self.classes)}

    def picture(self, forward: Any, images: Tensor, targets: Tensor) -> Tensor | None:
        return None  # the scalars say it all

    def keeper(self) -> Kept:
        return Kept()

    def report(self, kept: Any, loss: float, metrics: dict[str, float], run: LoadedRun,
               out_dir: Path) -> tuple[dict[str, Any], list[str]]:
        """metrics.json, per_class.csv, confusion.csv, confusion.png and wrong.png."""
        from training.plots import plot_confusion, plot_wrong

        out = kept.outputs()
        result = summary(out, self.classes, loss)
        matrix = confusion(out, len(self.classes))
        rows = per_class(matrix, self.classes)
        write_table(out_dir / "per_class.csv", list(rows[0]), [list(r.values()) for r in rows])
        write_table(out_dir / "confusion.csv", ["true \\ predicted", *self.classes],
                    [[name, *matrix[i].tolist()] for i, name in enumerate(self.classes)])
        plot_confusion(out_dir / "confusion.png", matrix, self.classes)
        plot_wrong(out_dir / "wrong.png", out, self.classes, WRONG_GRID)
        return result, ["per_class.csv", "confusion.csv", "confusion.png", "wrong.png"]

    def result_line(self, result: dict[str, Any]) -> str:
        top5 = f"  top-5 {100 * result['top5']:.2f}%" if result["top5"] is not None else ""
        return (f"on {result['num_samples']:,} images: top-1 {100 * result['top1']:.2f}%{top5}  "
                f"loss {result['loss']:.4f}")

    def predict(self, run: LoadedRun, request: PredictRequest) -> tuple[list[str], list[str]]:
        """The top-k classes of each image; a CSV (path,pred,prob,top2,prob2,...) when asked."""
        from training.predict import predict, rows

        found, errors = predict(run, request.files, request.topk, request.workers, request.device)
        header, table = rows(found, min(request.topk, len(self.classes)))
        lines = table_lines(header, table, limit=SHOWN if request.output else None)
        if request.output is not None:
            write_table(request.output, header, table)
            lines.append(f"wrote {request.output} ({len(table):,} predictions)")
        return lines, errors


def check_outputs(outputs: Tensor, targets: Tensor) -> None:
    """Class scores (N, classes) for labels (N,), or one located error (a per-pixel spec, say)."""
    if outputs.ndim != 2 or targets.ndim != 1:
        from training.errors import ConfigProblems

        raise ConfigProblems.at(("training", "dataset", "kind"), (
            f"a classification dataset needs a model whose output is one score per class (N, classes), but the "
            f"spec's model outputs {tuple(outputs.shape)}" + (" (per pixel: use a segmentation dataset)"
                                                              if outputs.ndim == 4 else "")))


def summary(out: Outputs, classes: tuple[str, ...], loss: float) -> dict[str, Any]:
    """metrics.json: top1, top5 (more than 5 classes), loss (mean cross-entropy), num_samples."""
    n = len(out.labels)
    top1 = float((out.logits.argmax(1) == out.labels).sum()) / n
    result: dict[str, Any] = {"top1": top1, "top5": None, "loss": loss, "num_samples": n,
                              "num_classes": len(classes)}
    if len(classes) > 5:
        top5 = out.logits.topk(5, dim=1).indices
        result["top5"] = float((top5 == out.labels[:, None]).any(1).sum()) / n
    return result


def confusion(out: Outputs, num_classes: int) -> Tensor:
    """(true, predicted) counts, int64 (classes, classes)."""
    index = out.labels * num_classes + out.logits.argmax(1)
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class(matrix: Tensor, classes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    rows = []
    for i, name in enumerate(classes):
        hit, predicted, support = int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i].sum())
        precision = hit / predicted if predicted else 0.0
        recall = hit / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support})
    return rows


def table_lines(header: list[str], table: list[list[object]], limit: int | None) -> list[str]:
    """The table in aligned columns (the first `limit` rows, then how many more)."""
    shown: list[list[str]] = [header, *([str(c) for c in r] for r in (table if limit is None else table[:limit]))]
    widths = [max(len(r[i]) for r in shown if i < len(r)) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in shown]
    if limit is not None and len(table) > limit:
        lines.append(f"... {len(table) - limit:,} more")
    return lines

