"""`predict`: classify image files with a run's model, exactly as its evaluation saw images.

Each file is decoded like an image folder in training (PIL convert to L or RGB, so grayscale and
RGBA are converted the same way; bilinear resize to the input size), then normalized with the
run's mean and std; the logits are averaged over the run's test-time views when it has `tta`.
Files are decoded in worker processes and classified in batches; an image that cannot be read
is reported on one line and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from training.config import TrainingConfig
from training.data.splits import IMAGE_EXTENSIONS, decode_image, ignore_sigint
from training.errors import BadImageError, RunDirError
from training.runinfo import LoadedRun
from training.tta import tta_forward

EXTENSIONS = frozenset(IMAGE_EXTENSIONS)
BATCH = 256


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named, and those under the folders named (recursively, sorted)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
        elif p.is_file():
            found.append(p)
        elif p.exists():
            raise RunDirError(f"{p}: not a regular file (a pipe, device or socket); images are read from files")
        else:
            raise RunDirError(f"{p}: no such file or directory")
    return found


class ImageFiles(Dataset[tuple[Tensor | None, int, str]]):
    """(uint8 image or None, index, error) per file: a bad file does not stop the others."""

    def __init__(self, files: Sequence[Path], mode: str, size: tuple[int, int]) -> None:
        self.files, self.mode, self.size = list(files), mode, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor | None, int, str]:
        try:
            return decode_image(str(self.files[index]), self.mode, self.size), index, ""
        except BadImageError as exc:
            return None, index, str(exc)


def _collate(items: list[tuple[Tensor | None, int, str]]) -> tuple[Tensor | None, list[int], list[str]]:
    good = [(x, i) for x, i, _ in items if x is not None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], [e for _, _, e in items if e]


@dataclass(frozen=True)
class Prediction:
    path: Path
    top: list[tuple[str, float]]  # (class name, probability), best first


def batches(run: LoadedRun, files: Sequence[Path], workers: int) -> Iterator[tuple[Tensor | None, list[int],
                                                                                      list[str]]]:
    dataset = ImageFiles(files, run.preprocess.mode, run.preprocess.size)
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=_collate,
                        worker_init_fn=ignore_sigint if workers else None)
    yield from loader


@torch.inference_mode()
def predict(run: LoadedRun, files: Sequence[Path], topk: int = 1, workers: int | None = None,
            device: str = "cpu") -> tuple[list[Prediction], list[str]]:
    """(predictions in file order, one error line per file that could not be read)."""
    workers = default_workers() if workers is None else workers
    prep = run.preprocess.batch_preprocess(None, torch.device(device))
    forward = tta_forward(run.model, TrainingConfig.model_validate(run.spec.training or {}).tta)
    k = min(topk, len(run.classes))
    found: list[Prediction] = []
    errors: list[str] = []
    for images, indices, bad in batches(run, files, workers):
        errors += bad
        if images is None:
            continue
        probs = forward(prep(images.to(device))).float().softmax(1)
        values, classes = probs.topk(k, dim=1)
        for i, row_p, row_c in zip(indices, values.tolist(), classes.tolist()):
            found.append(Prediction(files[i], [(run.classes[c], p) for c, p in zip(row_c, row_p)]))
    return found, errors


def default_workers() -> int:
    """Decode in parallel on all but one CPU (at most 8)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def rows(predictions: Iterable[Prediction], topk: int) -> tuple[list[str], list[list[object]]]:
    """CSV header and rows: path, pred, prob, then top2..topK names and probabilities."""
    header = ["path", "pred", "prob"]
    for j in range(2, topk + 1):
        header += [f"top{j}", f"prob{j}"]
    out = []
    for p in predictions:
        cells: list[object] = [str(p.path)]
        for name, prob in p.top:
            cells += [name, f"{prob:.6f}"]
        out.append(cells)
    return header, out
