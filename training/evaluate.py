"""`evaluate`: a run's weights on a split, as the trainer measures it, plus what the trainer does
not report: top-5, per-class precision/recall/F1/support, a confusion matrix (CSV and PNG) and a
grid of the most confidently wrong images.

The split is the run's own test split (the same subsets and order as training), or another
dataset given as `--data`; the preprocessing is the run's (run.json); batches, precision and
the loss are the trainer's, so top-1 and loss equal what the trainer reported for the weights.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from builder.lang.files import WriteError, write_text
from training.config import TrainingConfig
from training.data import Split, load_data
from training.device import autocast
from training.distributed import Dist, eval_indices
from training.runinfo import LoadedRun, Weights, load_run

WRONG_GRID = 16  # images in wrong.png


@dataclass(frozen=True)
class Outputs:
    """Every prediction of a split: logits (N, classes) as float32 on the CPU, and labels (N,)."""

    logits: Tensor
    labels: Tensor
    images: Tensor  # uint8 (N, C, h, w), kept for the picture of the wrong ones
    loss_sum: float  # summed cross-entropy, added up batch by batch as the trainer does


@torch.inference_mode()
def run_split(run: LoadedRun, split: Split, batch_size: int, precision: str, device: torch.device) -> Outputs:
    """The model over the whole split, in the trainer's eval batches and precision."""
    prep = run.preprocess.batch_preprocess(None, device)
    logits, labels, images, loss_sum = [], [], [], 0.0
    for x, y in split.batches(eval_indices(Dist(), len(split), batch_size)):
        with autocast(precision, device.type):
            out = run.model(prep(x.to(device)))
        loss_sum += F.cross_entropy(out.float(), y.to(device), reduction="sum").item()
        logits.append(out.float().cpu())
        labels.append(y.cpu())
        images.append(x.cpu())
    return Outputs(torch.cat(logits), torch.cat(labels), torch.cat(images), loss_sum)


def summary(out: Outputs, classes: tuple[str, ...]) -> dict[str, Any]:
    """metrics.json: top1, top5 (more than 5 classes), loss (mean cross-entropy), num_samples."""
    n = len(out.labels)
    top1 = float((out.logits.argmax(1) == out.labels).sum()) / n
    result: dict[str, Any] = {"top1": top1, "top5": None, "loss": out.loss_sum / n, "num_samples": n,
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


def write_table(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def evaluate_run(
    run_dir: Path, out_dir: Path, *, weights: Weights = "best", config: TrainingConfig | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a run on its test split (or `config.dataset`) and write the reports into `out_dir`."""
    run = load_run(run_dir, weights, device)
    cfg = config or TrainingConfig.model_validate(run.spec.training or {})
    split = test_split(cfg, run)
    out = run_split(run, split, cfg.batch_size, cfg.precision if cfg.precision != "auto" else "fp32",
                    torch.device(device))
    result = {**summary(out, run.classes), "weights": weights, "run": str(run_dir)}
    matrix = confusion(out, len(run.classes))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    rows = per_class(matrix, run.classes)
    write_table(out_dir / "per_class.csv", list(rows[0]), [list(r.values()) for r in rows])
    write_table(out_dir / "confusion.csv", ["true \\ predicted", *run.classes],
                [[name, *matrix[i].tolist()] for i, name in enumerate(run.classes)])
    from training.plots import plot_confusion, plot_wrong

    plot_confusion(out_dir / "confusion.png", matrix, run.classes)
    plot_wrong(out_dir / "wrong.png", out, run.classes, WRONG_GRID)
    return result


def test_split(config: TrainingConfig, run: LoadedRun) -> Split:
    """The test split of the dataset (validation when it has no test split), as training loaded it."""
    from training.errors import RunDirError

    data = load_data(config.dataset, run.spec, config.workers)
    split = data.test if data.test is not None else data.val
    if split is None or len(split) == 0:
        raise RunDirError(f"the {data.name} dataset has no test or validation images to evaluate")
    return split


def unique_dir(base: Path) -> Path:
    """`base`, or base-2, base-3, ... : the first that does not exist (nothing is overwritten)."""
    path, n = base, 2
    while path.exists():
        path, n = base.with_name(f"{base.name}-{n}"), n + 1
    return path

