"""Per-epoch metrics: a row of metrics.csv (written and read by training/runfiles.py), curves.png
(matplotlib's Agg canvas, no pyplot) and log lines."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.lang.files import write_bytes
from training.tasks import ACCURACY, Metric, columns

# Classification's columns; a task's are training.tasks.columns(its metrics).
COLUMNS = columns((ACCURACY,))


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch: its row of metrics.csv, column -> value, in column order (training.tasks.columns):
    epoch, train_loss, train_acc, test_loss, test_acc, lr, seconds, val_loss, val_acc for
    classification. Accuracies are fractions; test_* are None on epochs without evaluation,
    val_* without a validation split. train_loss is the training objective (with label
    smoothing); test_loss is the task's evaluation loss. Columns read as attributes (m.val_acc)."""

    row: dict[str, Any]

    @classmethod
    def of(cls, names: Sequence[str], **values: Any) -> EpochMetrics:
        """The row of `names` (None where no value is given)."""
        return cls({name: values.get(name) for name in names})

    def __getattr__(self, name: str) -> Any:
        row = self.__dict__.get("row", {})
        if name not in row:
            raise AttributeError(f"{type(self).__name__} has no column {name!r}")
        return row[name]

    @property
    def epoch(self) -> int:
        return int(self.row["epoch"])

    @property
    def lr(self) -> float:
        return float(self.row["lr"])

    @property
    def seconds(self) -> float:
        return float(self.row["seconds"])

    @property
    def train_loss(self) -> float:
        return float(self.row["train_loss"])

    def get(self, column: str) -> Any:
        """A column's value; None where it was not evaluated (or the task has no such column)."""
        return self.row.get(column)

    def updated(self, **values: Any) -> EpochMetrics:
        return EpochMetrics({**self.row, **values})

    def as_dict(self) -> dict[str, Any]:
        return dict(self.row)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        return cls(dict(data))


def plot_curves(path: Path, history: Sequence[EpochMetrics], title: str = "",
                step_losses: Sequence[float] = (), steps_per_epoch: int = 1, metric: Metric = ACCURACY) -> None:
    """Per-step training loss (raw and smoothed, so one epoch already shows a curve), then loss
    and the task's headline `metric` per epoch for train, validation and test, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    step_ax, loss_ax, acc_ax = fig.subplots(1, 3)
    x = [(i + 1) / steps_per_epoch for i in range(len(step_losses))]
    step_ax.plot(x, step_losses, lw=0.6, alpha=0.35, label="per step")
    step_ax.plot(x, smoothed(step_losses), lw=1.5, label="smoothed")
    for name, style in (("train", "o-"), ("val", "^-"), ("test", "s-")):
        rows = [m for m in history if m.get(f"{name}_loss") is not None]
        epochs = [m.epoch for m in rows]
        scale = 100 if metric.percent else 1
        loss_ax.plot(epochs, [m.get(f"{name}_loss") for m in rows], style, ms=3, label=name)
        acc_ax.plot(epochs, [scale * m.get(f"{name}_{metric.name}") for m in rows], style, ms=3, label=name)
    for ax, label in ((step_ax, "training loss"), (loss_ax, "loss"), (acc_ax, metric.axis)):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(path, buffer.getvalue())


def smoothed(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """TensorBoard's debiased exponential moving average."""
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out.append(avg / (1 - weight ** (i + 1)))
    return out


def epoch_line(m: EpochMetrics, epochs: int, images: int, metrics: Sequence[Metric] = (ACCURACY,)) -> str:
    """`epoch 3/10  train loss 0.412 acc 87.1%  val loss 0.33 acc 90.1%  test loss 0.301 acc 91.2%  lr 0.0412
    12.3s (1,160 img/s)` on one line; val and test parts only where they were evaluated."""
    val = f"val {_split_part(m, 'val', metrics)}  " if m.get("val_loss") is not None else ""
    test = f"test {_split_part(m, 'test', metrics)}" if m.get("test_loss") is not None else "test -"
    return (
        f"epoch {m.epoch}/{epochs}  train {_split_part(m, 'train', metrics)}  {val}{test}  "
        f"lr {m.lr:.4g}  {m.seconds:.1f}s ({images / max(m.seconds, 1e-9):,.0f} img/s)"
    )


def _split_part(m: EpochMetrics, split: str, metrics: Sequence[Metric]) -> str:
    """`loss 0.4120 acc 87.10%`: a split's loss and metrics."""
    shown = "".join(f" {x.name} {x.format(m.get(f'{split}_{x.name}'))}" for x in metrics)
    return f"loss {m.get(f'{split}_loss'):.4f}{shown}"
