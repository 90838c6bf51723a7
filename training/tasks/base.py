"""The task seam: what a kind of problem (classification, segmentation) brings to the trainer.

The trainer, the evaluation loop, `evaluate` and `predict` know nothing of labels or masks:
a `Task` gives them the loss, the per-batch tally of counts that adds up over batches and
ranks, the metrics computed from a whole split's tally, the run directory's description of
outputs, the evaluate report and the predict writer. Torch-free at import: the config
validates `monitor` against a task's metric names (`TaskKind`) without torch.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from builder.lang.files import write_text

if TYPE_CHECKING:
    from pathlib import Path

    from torch import Tensor

    from training.runinfo import LoadedRun


@dataclass(frozen=True)
class Metric:
    """A metric a task logs for every split besides the loss (columns train_NAME, val_NAME, test_NAME)."""

    name: str  # the column suffix: acc, miou, ...
    title: str  # in a sentence: "test accuracy 91.20%"
    axis: str  # curves.png's axis label
    percent: bool = True  # shown x100 with a % sign (a fraction in the files)
    higher_is_better: bool = True

    def format(self, value: float) -> str:
        return f"{100 * value:.2f}%" if self.percent else f"{value:.4f}"


def split_columns(split: str, metrics: Sequence[Metric]) -> tuple[str, ...]:
    """SPLIT_loss and SPLIT_NAME for each metric."""
    return (f"{split}_loss", *(f"{split}_{m.name}" for m in metrics))


def columns(metrics: Sequence[Metric]) -> tuple[str, ...]:
    """metrics.csv's columns. val_* come last, as they did when classification alone existed
    (readers of the first columns by position keep working)."""
    return ("epoch", *split_columns("train", metrics), *split_columns("test", metrics), "lr", "seconds",
            *split_columns("val", metrics))


@dataclass(frozen=True)
class TaskKind:
    """A task as the torch-free config sees it: its name, metrics and defaults
    (training.tasks.make makes the task itself)."""

    name: str
    metrics: tuple[Metric, ...]  # the first is the headline (the farewell line, curves.png)

    @property
    def default_monitor(self) -> str:
        return f"val_{self.metrics[0].name}"

    @property
    def monitorable(self) -> tuple[str, ...]:
        """What `monitor` and early stopping may watch: validation metrics."""
        return split_columns("val", self.metrics)

    def higher_is_better(self, column: str) -> bool:
        """Is a larger value of `column` (e.g. val_acc, val_loss) an improvement?"""
        _, _, name = column.partition("_")
        return any(m.name == name and m.higher_is_better for m in self.metrics)

    @property
    def columns(self) -> tuple[str, ...]:
        return columns(self.metrics)


@dataclass(frozen=True)
class PredictRequest:
    """What `predict` was asked: the image files and where the results go."""

    files: Sequence[Path]
    output: Path | None  # None: print only
    topk: int = 1
    workers: int | None = None  # decoding processes; None: the default
    device: str = "cpu"
    force: bool = False  # replace existing output files (training.outputs' rule)


class Keeper(Protocol):
    """What `evaluate` keeps of a split's batches for its report (outputs on the CPU, images)."""

    def add(self, images: Tensor, outputs: Tensor, targets: Tensor) -> None: ...


class Task(Protocol):
    """A kind of problem, made for one run: `training.tasks.make.make_task(config, classes)`."""

    kind: TaskKind
    classes: tuple[str, ...]  # in label (index) order
    pictured: bool  # whether `picture` draws anything (the trainer skips the forward pass otherwise)

    @property
    def tally_size(self) -> int:
        """The length of `tally`'s result."""
        ...

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The training objective of a batch: a 0-d float32 mean over its samples."""
        ...

    def loss_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The evaluation loss summed over the batch's samples (0-d); split loss = sum / samples."""
        ...

    def tally(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """1-D counts of a batch (on its device, no host sync) that add up over batches and ranks:
        the correct predictions, a confusion matrix, ..."""
        ...

    def summarize(self, tally: Sequence[float], samples: int) -> dict[str, float]:
        """Each metric's value (by Metric.name) from a whole split's summed tally."""
        ...

    def describe(self) -> dict[str, Any]:
        """run.json's description of the outputs (class names; a palette)."""
        ...

    def picture(self, forward: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor) -> Tensor | None:
        """TensorBoard's picture of a few validation samples (uint8 (3, H, W)), drawn from
        `forward` of their uint8 images; None: the task shows none (classification, `pictured` False)."""
        ...

    def keeper(self) -> Keeper:
        """A fresh collector of what the evaluate report needs."""
        ...

    def report(self, kept: Keeper, loss: float, metrics: dict[str, float], run: LoadedRun,
               out_dir: Path) -> tuple[dict[str, Any], list[str]]:
        """Write the evaluate report's files into out_dir: (metrics.json's contents, the names of
        the files written)."""
        ...

    def result_line(self, result: dict[str, Any]) -> str:
        """What `evaluate` prints of metrics.json: "on 360 images: top-1 91.20% ..."."""
        ...

    def predict(self, run: LoadedRun, request: PredictRequest) -> tuple[list[str], list[str]]:
        """Predict `request.files` and write the results: (lines to print, one error line per
        file that could not be read)."""
        ...


def write_table(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A report table as CSV (atomically, as every file is written)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
