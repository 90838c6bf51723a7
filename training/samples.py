"""`python -m builder samples RUN_DIR -o DIR`: a few images of a run's own dataset as PNG files.

Something to try `predict` and `load_run` on without hunting for pictures: the first `--count`
images of the run's test split (validation when it has none), at the size training
saw them, named 0000.png, 0001.png, ..., with `samples.csv` giving each file's true class (for a
segmentation dataset, the classes present in its mask). Offline for digits and shapes.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import Tensor

from builder.lang.files import write_bytes
from training.data import Split
from training.runinfo import LoadedRun
from training.tasks.base import write_table

LISTING = "samples.csv"


def sample_split(run: LoadedRun) -> Split:
    """The split the samples come from: the one `evaluate` reads (test, else validation)."""
    from training.config import TrainingConfig
    from training.evaluate import test_split

    return test_split(TrainingConfig.model_validate(run.spec.training or {}), run)


def png_bytes(image: Tensor) -> bytes:
    """uint8 (C, H, W), C 1 or 3 -> PNG."""
    from PIL import Image

    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def truth(run: LoadedRun, target: Tensor) -> str:
    """A label's class name, or the classes present in a mask (space-separated)."""
    names = run.classes
    if target.ndim == 0:
        return names[int(target)]
    present = [int(c) for c in torch.unique(target).tolist() if 0 <= int(c) < len(names)]
    return " ".join(names[c] for c in present)


def write_samples(run: LoadedRun, paths: list[Path]) -> int:
    """Write up to len(paths) images of the run's dataset to `paths` and samples.csv beside them
    (the caller has checked every path against the output rule); the number written."""
    split = sample_split(run)
    count = min(len(paths), len(split))
    images, targets = next(iter(split.batches([torch.arange(count)])))
    rows = []
    for path, image, target in zip(paths, images, targets):
        write_bytes(path, png_bytes(image))
        rows.append([path.name, truth(run, target)])
    write_table(paths[0].parent / LISTING, ["file", "true"], rows)
    return len(rows)
