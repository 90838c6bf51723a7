"""Per-epoch metrics: metrics.csv, curves.png (matplotlib's Agg canvas, no pyplot) and log lines."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from builder.lang.files import write_bytes

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


def plot_curves(path: Path, history: Sequence[EpochMetrics], title: str = "",
                step_losses: Sequence[float] = (), steps_per_epoch: int = 1) -> None:
    """Per-step training loss (raw and smoothed, so one epoch already shows a curve), then loss
    and accuracy per epoch for train, validation and test, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    step_ax, loss_ax, acc_ax = fig.subplots(1, 3)
    x = [(i + 1) / steps_per_epoch for i in range(len(step_losses))]
    step_ax.plot(x, step_losses, lw=0.6, alpha=0.35, label="per step")
    step_ax.plot(x, smoothed(step_losses), lw=1.5, label="smoothed")
    for name, style in (("train", "o-"), ("val", "^-"), ("test", "s-")):
        rows = [m for m in history if getattr(m, f"{name}_loss") is not None]
        epochs = [m.epoch for m in rows]
        loss_ax.plot(epochs, [getattr(m, f"{name}_loss") for m in rows], style, ms=3, label=name)
        acc_ax.plot(epochs, [100 * getattr(m, f"{name}_acc") for m in rows], style, ms=3, label=name)
    for ax, label in ((step_ax, "training loss"), (loss_ax, "loss"), (acc_ax, "top-1 accuracy (%)")):
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


def epoch_line(m: EpochMetrics, epochs: int, images: int) -> str:
    """`epoch 3/10  train loss 0.412 acc 87.1%  val loss 0.33 acc 90.1%  test loss 0.301 acc 91.2%  lr 0.0412
    12.3s (1,160 img/s)` on one line; val and test parts only where they were evaluated."""
    val = f"val loss {m.val_loss:.4f} acc {100 * m.val_acc:.2f}%  " if m.val_acc is not None else ""
    test = f"test loss {m.test_loss:.4f} acc {100 * m.test_acc:.2f}%" if m.test_acc is not None else "test -"
    return (
        f"epoch {m.epoch}/{epochs}  train loss {m.train_loss:.4f} acc {100 * m.train_acc:.2f}%  {val}{test}  "
        f"lr {m.lr:.4g}  {m.seconds:.1f}s ({images / max(m.seconds, 1e-9):,.0f} img/s)"
    )
