"""Per-epoch metrics: metrics.csv, curves.png (matplotlib's Agg canvas, no pyplot) and log lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from training.files import write_bytes

# val_* came last, so readers of the first columns by position still work.
COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "val_loss", "val_acc")


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch. Accuracies are fractions; test_* are None on epochs without evaluation.
    train_loss is the training objective (with label smoothing); test_loss is cross-entropy."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    lr: float  # at the epoch's last step
    seconds: float  # wall time of the epoch: training and evaluation
    val_loss: float | None = None  # None: no validation split
    val_acc: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochMetrics:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def write_csv(path: Path, history: Sequence[EpochMetrics]) -> None:
    """Rewrite metrics.csv from the whole history (so a resumed run's file is whole too)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for m in history:
        writer.writerow(["" if getattr(m, c) is None else _cell(getattr(m, c)) for c in COLUMNS])
    write_bytes(path, buffer.getvalue().encode())


def _cell(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(path: Path, history: Sequence[EpochMetrics], title: str = "") -> None:
    """Loss and accuracy per epoch, train and test, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [m.epoch for m in history]
    tested = [m for m in history if m.test_loss is not None]
    loss_ax.plot(epochs, [m.train_loss for m in history], "o-", ms=3, label="train")
    loss_ax.plot([m.epoch for m in tested], [m.test_loss for m in tested], "s-", ms=3, label="test")
    acc_ax.plot(epochs, [100 * m.train_acc for m in history], "o-", ms=3, label="train")
    acc_ax.plot([m.epoch for m in tested], [100 * (m.test_acc or 0) for m in tested], "s-", ms=3, label="test")
    for ax, label in ((loss_ax, "loss"), (acc_ax, "top-1 accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(path, buffer.getvalue())


def epoch_line(m: EpochMetrics, epochs: int, images: int) -> str:
    """`epoch 3/10  train loss 0.412 acc 87.1%  test loss 0.301 acc 91.2%  lr 0.0412  12.3s (1,160 img/s)`."""
    test = f"test loss {m.test_loss:.4f} acc {100 * m.test_acc:.2f}%" if m.test_acc is not None else "test -"
    return (
        f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f} acc {100 * m.train_acc:.2f}%  {test}  "
        f"lr {m.lr:.4g}  {m.seconds:.1f}s ({images / max(m.seconds, 1e-9):,.0f} img/s)"
    )
