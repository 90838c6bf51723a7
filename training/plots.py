"""The pictures of `evaluate`: a confusion matrix with class names, the most confidently wrong
images (classification) and the worst segmented ones (matplotlib's Agg canvas, no pyplot)."""

from __future__ import annotations

import io
from collections.abc import Sequence
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


def plot_confusion(path: Path, matrix: Tensor, classes: tuple[str, ...], rates: bool = False) -> None:
    """Row-normalized colours, counts (`rates`: the row's percentages, for pixel counts) written in
    the cells, class names on both axes."""
    n = len(classes)
    size = min(4 + 0.45 * n, 30)
    fig = _figure(size, size)
    ax = fig.subplots()
    shares = matrix.double() / matrix.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(shares.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # counts stay legible
        for i in range(n):
            for j in range(n):
                color = "white" if shares[i, j] > 0.5 else "black"
                text = f"{100 * float(shares[i, j]):.1f}%" if rates else str(int(matrix[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    if rates:
        ax.set_title("each true class's pixels by predicted class", fontsize=9)
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



def plot_worst(path: Path, pictures: Sequence[tuple[str, Tensor, Tensor, Tensor]], classes: tuple[str, ...],
               palette: Sequence[Sequence[int]]) -> None:
    """One row per (title, image, truth overlay, prediction overlay), uint8 (3, H, W) each, with
    a legend of the class colours."""
    from matplotlib.patches import Patch

    rows = max(1, len(pictures))
    fig = _figure(7.2, 2.3 * rows + 0.6)
    axes = fig.subplots(rows, 3, squeeze=False)
    for ax in axes.flatten():
        ax.axis("off")
    for row, (title, *shown) in zip(axes, pictures):
        for ax, picture, label in zip(row, shown, ("image", "truth", "prediction")):
            ax.imshow(picture.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(title if label == "image" else label, fontsize=8)
    if not pictures:
        axes[0, 1].text(0.5, 0.5, "no images", ha="center", va="center")
    handles = [Patch(facecolor=(c[0] / 255, c[1] / 255, c[2] / 255), edgecolor="gray", label=name)
               for name, c in zip(classes, palette)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.suptitle("lowest mIoU: image | truth | prediction (class colours over the image)")
    _save(fig, path)
