"""`predict` for segmentation runs: a mask per image at the image's own size.

Each file is decoded as training decodes images (PIL convert to L or RGB) but not resized, and
normalized with the run's mean and std. A fully convolutional network takes many sizes, not all:
a U-Net whose skips must match exactly needs sides that are multiples of its total downsampling
(16 for four 2x2 pools). That divisor is read from the spec's static shapes (the input side over
the smallest side any block outputs); each image is zero-padded at the bottom and right (zero
after normalization: the training images' mean colour) to the next multiples of it, predicted,
and the logits cropped back to the image. Whether the padded size fits is checked by static
inference before anything runs; an image whose size does not (a spec that upsamples to a fixed
size, say) is skipped with one line naming why.

Written into `-o DIR`, mirroring the images' paths below their common folder: NAME_mask.png (a
palette PNG whose pixel values are the class indices, in the run's colours), NAME_overlay.png
(the image with each class other than 0 blended with its colour), and fractions.csv (each
image's share of pixels per class).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from builder.lang.shapes import infer
from builder.lang.spec import Spec
from training.data.splits import decode_image, ignore_sigint
from training.errors import BadImageError, RunDirError
from training.predict import default_workers
from training.runinfo import LoadedRun
from training.tasks.base import PredictRequest


class Segmenter(Protocol):
    """What predicting masks needs of the segmentation task (training.tasks.segmentation)."""

    classes: tuple[str, ...]
    palette: list[list[int]]

    @property
    def num_classes(self) -> int: ...

    def predicted(self, logits: Tensor) -> Tensor:
        """int64 (N, H, W) classes of logits (N, C, H, W)."""
        ...


BATCH = 32  # files decoded per loader batch; images of one size are predicted together
SHOWN = 20  # rows printed when the results are also written
FRACTIONS = "fractions.csv"


# --- which sizes a spec takes ------------------------------------------------------------------


def at_size(spec: Spec, height: int, width: int) -> Spec:
    """The spec with another input size (for static inference only)."""
    return spec.model_copy(update={"input": spec.input.model_copy(update={"height": height, "width": width})})


def divisor(spec: Spec) -> tuple[int, int]:
    """(height, width) the network's input sides should be multiples of: the input side over the
    smallest side of any block's output at the spec's own size (16 for a U-Net of four 2x2 pools)."""
    report = infer(spec)
    sides = [b.out_shape[1:] for b in report.all_blocks if len(b.out_shape) == 3]
    h, w = spec.input.height, spec.input.width
    low_h, low_w = min([s[0] for s in sides], default=h), min([s[1] for s in sides], default=w)
    return max(1, h // max(low_h, 1)), max(1, w // max(low_w, 1))


def size_problem(spec: Spec, height: int, width: int) -> str | None:
    """Why the spec cannot predict every pixel of a height x width input, or None if it can."""
    report = infer(at_size(spec, height, width))
    if report.problems:
        return report.problems[0].message
    out = report.head.out if report.head is not None else ()
    if tuple(out[1:]) != (height, width):
        return f"the spec's output at that size is {'x'.join(map(str, out))}, not a map of {height}x{width}"
    return None


@dataclass
class Sizes:
    """The size each image size is predicted at (padded up to the divisor), checked statically once per size."""

    spec: Spec
    step: tuple[int, int] = (1, 1)
    seen: dict[tuple[int, int], tuple[int, int] | str] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: Spec) -> Sizes:
        return cls(spec, divisor(spec))

    def padded(self, height: int, width: int) -> tuple[int, int] | str:
        """(H, W) >= the size, multiples of the divisor, at which the spec fits; or why none does."""
        if (height, width) not in self.seen:
            ph, pw = (math.ceil(s / d) * d for s, d in zip((height, width), self.step))
            problem = size_problem(self.spec, ph, pw)
            padding = f" (padded to {ph}x{pw}, multiples of {self.step[0]}x{self.step[1]})" if (ph, pw) != (
                height, width) else ""
            self.seen[(height, width)] = (ph, pw) if problem is None else \
                f"{height}x{width}{padding} does not fit {self.spec.name}: {problem}"
        return self.seen[(height, width)]


# --- decoding ---------------------------------------------------------------------------------


class NativeImages(Dataset[tuple[Tensor | None, int, str]]):
    """(uint8 image or None, index, error) per file."""

    def __init__(self, files: Sequence[Path], mode: str) -> None:
        self.files, self.mode = list(files), mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor | None, int, str]:
        try:
            return decode_image(str(self.files[index]), self.mode, None), index, ""
        except BadImageError as exc:
            return None, index, str(exc)


@dataclass(frozen=True)
class Decoded:
    """One loader batch: its images stacked by size ((h, w) -> (uint8 (N, C, h, w), their file
    indices)) and an error line per file that could not be decoded."""

    groups: dict[tuple[int, int], tuple[Tensor, list[int]]]
    errors: list[str]


def collate(items: list[tuple[Tensor | None, int, str]]) -> Decoded:
    """Stacked in the decoding worker, so one tensor per size crosses to the main process (one
    per image costs a socket and a file descriptor each)."""
    groups: dict[tuple[int, int], list[tuple[Tensor, int]]] = {}
    for image, index, _ in items:
        if image is not None:
            groups.setdefault((image.shape[1], image.shape[2]), []).append((image, index))
    stacked = {size: (torch.stack([x for x, _ in g]), [i for _, i in g]) for size, g in groups.items()}
    return Decoded(stacked, [error for _, _, error in items if error])


def decoded(files: Sequence[Path], mode: str, workers: int) -> Iterator[Decoded]:
    loader = DataLoader(NativeImages(files, mode), batch_size=BATCH, num_workers=workers, collate_fn=collate,
                        worker_init_fn=ignore_sigint if workers else None)
    yield from loader


# --- predicting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Masks:
    """One size's images (uint8 (N, C, h, w)), their file indices and predicted masks (int64 (N, h, w))."""

    images: Tensor
    indices: list[int]
    masks: Tensor


@torch.inference_mode()
def segment(task: Segmenter, run: LoadedRun, images: Tensor, size: tuple[int, int]) -> Tensor:
    """int64 (N, h, w) classes of uint8 images (N, C, h, w) on the model's device, normalized as
    in training, zero-padded to `size` and cropped back."""
    from training.config import Augment
    from training.data import preprocess_for

    p, (h, w) = run.preprocess, images.shape[-2:]
    x = preprocess_for(p.mean, p.std, (h, w), Augment(), images.device)(images)
    x = F.pad(x, (0, size[1] - w, 0, size[0] - h))
    return task.predicted(run.model(x)[..., :h, :w].float())


def predicted_masks(task: Segmenter, run: LoadedRun, files: Sequence[Path], workers: int,
                    device: str) -> Iterator[Masks | str]:
    """Each size group's masks, in decoding order, or an error line per file that was skipped."""
    sizes, step = Sizes.of(run.spec), model_batch(run)
    for batch in decoded(files, run.preprocess.mode, workers):
        yield from batch.errors
        for (h, w), (images, indices) in batch.groups.items():
            size = sizes.padded(h, w)
            if isinstance(size, str):
                yield from (f"{files[i]}: {size}" for i in indices)
                continue
            masks = torch.cat([segment(task, run, chunk.to(device), size).cpu() for chunk in images.split(step)])
            yield Masks(images, indices, masks)


def model_batch(run: LoadedRun) -> int:
    """Images per forward pass: the recipe's batch size, as the evaluation pass uses (on a CPU,
    images/s falls with larger batches: the full-width U-Net takes 37.7 ms per 64x64 image at 8,
    44.6 ms at 32)."""
    from training.config import TrainingConfig

    return TrainingConfig.model_validate(run.spec.training or {}).batch_size


def fractions(masks: Tensor, classes: int) -> list[list[float]]:
    """Each mask's share of its pixels per class, for masks (N, h, w) of one size; one bincount
    for the batch (mask i's classes counted at i * classes + class)."""
    n, pixels = masks.shape[0], masks[0].numel()
    offsets = torch.arange(n, device=masks.device).view(-1, 1) * classes
    counts = torch.bincount((masks.reshape(n, -1) + offsets).flatten(), minlength=n * classes)
    return (counts.view(n, classes).double() / max(pixels, 1)).tolist()


# --- writing ----------------------------------------------------------------------------------


def output_names(files: Sequence[Path]) -> list[Path]:
    """Each file's path below the files' common folder, without its suffix (unique: a second
    a.jpg beside a.png is a.jpg)."""
    absolute = [f.absolute() for f in files]
    common = Path(os.path.commonpath([f.parent for f in absolute]))
    names, taken = [], set()
    for f in absolute:
        name = f.relative_to(common).with_suffix("")
        if name in taken:
            name = f.relative_to(common)
        taken.add(name)
        names.append(name)
    return names


def mask_png(mask: Tensor, palette: Sequence[Sequence[int]]) -> bytes:
    """A palette PNG: pixel values are the class indices, shown in the run's colours."""
    import io

    from PIL import Image

    image = Image.fromarray(mask.to(torch.uint8).numpy(), mode="P")
    image.putpalette([v for c in palette for v in c])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def rgb_png(picture: Tensor) -> bytes:
    """uint8 (3, H, W) -> PNG bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_pngs(paths: Sequence[tuple[Path, Path]], found: Masks, palette: Sequence[Sequence[int]]) -> None:
    """The mask and the overlay of each image of one size group, at `paths` (mask, overlay) in
    the group's order (run in a writer thread; the overlays are blended as one batch)."""
    from builder.lang.files import write_bytes
    from training.tasks.overlays import overlay

    overlays = overlay(found.images, found.masks, palette)
    for (mask_path, overlay_path), mask, picture in zip(paths, found.masks, overlays):
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(mask_path, mask_png(mask, palette), durable=False)  # regenerable: atomic, not fsynced
        write_bytes(overlay_path, rgb_png(picture), durable=False)


def targets(out: Path, names: Sequence[Path]) -> list[tuple[Path, Path]]:
    return [(out / f"{n}_mask.png", out / f"{n}_overlay.png") for n in names]


def check_targets(out: Path, paths: Sequence[tuple[Path, Path]], force: bool) -> None:
    """-o DIR: a directory (made if missing); no file written that the output rule refuses."""
    from training.outputs import OutputRefused, check_outputs

    if out.exists() and not out.is_dir():
        raise OutputRefused(f"-o {out}: not a directory (a segmentation run writes a mask per image into -o DIR)")
    check_outputs([out / FRACTIONS, *(p for pair in paths for p in pair)], flag="-o", force=force, parents=True)


def predict_masks(task: Segmenter, run: LoadedRun, request: PredictRequest) -> tuple[list[str], list[str]]:
    """Predict every file; with request.output, write its masks, overlays and fractions.csv."""
    from training.tasks.base import write_table
    from training.tasks.classification import table_lines

    files, out = list(request.files), request.output
    paths = prepare_output(out, files, request.force) if out is not None else []
    rows, errors = written_masks(task, run, request, paths)
    header = ["path", "height", "width", *task.classes]
    table = [rows[i] for i in sorted(rows)]
    lines = table_lines(header, table, limit=SHOWN if out is not None else None)
    if out is not None:
        write_table(out / FRACTIONS, header, table)
        lines.append(f"wrote {out}: {len(table):,} masks (NAME_mask.png) and overlays (NAME_overlay.png), {FRACTIONS}")
    return lines, errors


def prepare_output(out: Path, files: Sequence[Path], force: bool) -> list[tuple[Path, Path]]:
    """Each file's (mask, overlay) path in `out`, once the output rule allows them all; `out` made."""
    paths = targets(out, output_names(files))
    check_targets(out, paths, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"-o {out}: cannot create it: {exc.strerror or exc}") from None
    return paths


def written_masks(task: Segmenter, run: LoadedRun, request: PredictRequest,
                  paths: Sequence[tuple[Path, Path]]) -> tuple[dict[int, list[object]], list[str]]:
    """({file index: its fractions row}, error lines); each mask and overlay written (when `paths`)
    by writer threads while the next images are predicted."""
    files = list(request.files)
    workers = default_workers() if request.workers is None else request.workers
    rows: dict[int, list[object]] = {}
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: list[Future[None]] = []
        for found in predicted_masks(task, run, files, workers, request.device):
            if isinstance(found, str):
                errors.append(found)
                continue
            height, width = found.masks.shape[1:]
            for index, shares in zip(found.indices, fractions(found.masks, task.num_classes)):
                rows[index] = [str(files[index]), height, width, *(f"{v:.6f}" for v in shares)]
            if paths:
                pending.append(pool.submit(write_pngs, [paths[i] for i in found.indices], found, task.palette))
        for future in pending:
            future.result()  # a write error surfaces here, as one line
    return rows, errors
