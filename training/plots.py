"""The pictures of `evaluate`: a confusion matrix with class names, and the most confidently
wrong images (matplotlib's Agg canvas, no pyplot)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from torch import Tensor

from builder.lang.files import write_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from training.tasks.classification import Outputs


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(path, buffer.getvalue())


def plot_confusion(path: Path, matrix: Tensor, classes: tuple[str, ...]) -> None:
    """Row-normalized colours, counts written in the cells, class names on both axes."""
    n = len(classes)
    size = min(4 + 0.45 * n, 30)
    fig = _figure(size, size)
    ax = fig.subplots()
    rates = matrix.double() / matrix.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # counts stay legible
        for i in range(n):
            for j in range(n):
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7, color=color)
    _save(fig, path)


def plot_wrong(path: Path, out: Outputs, classes: tuple[str, ...], count: int) -> None:
    """The `count` wrong predictions with the highest probability, titled true -> predicted (p)."""
    probs = out.logits.softmax(1)
    confidence, predicted = probs.max(1)
    wrong = (predicted != out.labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:count]
    cols = 4
    rows = max(1, -(-len(order) // cols))
    fig = _figure(2.2 * cols, 2.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, order.tolist()):
        image = out.images[i].permute(1, 2, 0)
        ax.imshow(image.squeeze(2).numpy() if image.shape[2] == 1 else image.numpy(), cmap="gray")
        ax.set_title(f"{classes[int(out.labels[i])]} -> {classes[int(predicted[i])]} ({float(confidence[i]):.0%})",
                     fontsize=8)
    if len(order) == 0:
        axes[0].text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
    fig.suptitle("most confidently wrong: true -> predicted (probability)")
    _save(fig, path)

