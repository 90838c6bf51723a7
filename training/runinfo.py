"""What makes a run directory self-describing, and `load_run` that reads it back.

run.json holds the class names in label order, the input shape and the exact eval-time
preprocessing (decode mode, resize, mean and std as used in training). With spec.yaml and the
weights (model.safetensors: final, best.safetensors: best validation epoch) that is all a model
needs to classify new images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from builder.lang.spec import Spec
from training.errors import RunDirError
from training.runfiles import BEST, FORMAT, RESULTS, RUN_INFO, SPEC_FILE, WEIGHT_FILES, read_run_info
from training.runfiles import write_run_info as write_info

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from torch import Tensor, nn

    from training.data import Data
    from training.tasks import Task

__all__ = ["BEST", "RESULTS", "RUN_INFO", "SPEC_FILE", "WEIGHT_FILES", "EvalPreprocess", "LoadedRun", "Weights",
           "load_run", "read_run_info", "run_info", "write_run_info"]

Weights = Literal["best", "final"]


def run_info(spec: Spec, data: Data, task: Task | None = None) -> dict[str, Any]:
    """The plain data of run.json for a spec trained on `data` (the description of the outputs is
    the task's; a classification run's is its class names alone, as before there were tasks)."""
    outputs = task.describe() if task is not None else {"classes": list(data.classes)}
    return {
        "format": FORMAT, "version": 1, "spec": spec.name, "dataset": data.name, **outputs,
        "input": {"channels": spec.input.channels, "height": spec.input.height, "width": spec.input.width},
        "preprocess": {
            "mode": "L" if spec.input.channels == 1 else "RGB",  # PIL convert() of every image
            "resize": "bilinear",  # to (height, width); antialiased when shrinking
            "scale": 1 / 255,
            "mean": list(data.mean), "std": list(data.std),
        },
    }


def write_run_info(run_dir: Path, spec: Spec, data: Data, task: Task | None = None) -> None:
    write_info(run_dir, run_info(spec, data, task))


@dataclass(frozen=True)
class EvalPreprocess:
    """Exactly training's eval-time preprocessing: PIL image (or path) or a uint8 batch
    (N, C, h, w) -> normalized float (N, C, H, W). `resize` False (segmentation runs, whose
    masks are predicted at each image's own size): (N, C, h, w), normalized only."""

    mode: str
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: bool = True

    def __call__(self, images: Tensor | Image | str | Path) -> Tensor:
        import torch

        from training.config import Augment
        from training.data.splits import decode_image

        if isinstance(images, (str, Path)) and not self.resize:
            images = decode_image(str(images), self.mode, None)[None]
        elif not isinstance(images, torch.Tensor):
            images = decode_image(str(images), self.mode, self.size)[None] if isinstance(images, (str, Path)) \
                else self.decode_pil(images)
        size = self.size if self.resize else (images.shape[-2], images.shape[-1])
        from training.data import preprocess_for

        return preprocess_for(self.mean, self.std, size, Augment(), images.device)(images)

    def decode_pil(self, image: Image) -> Tensor:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        img = image.convert(self.mode)
        height, width = self.size if self.resize else (img.height, img.width)
        img = img if img.size == (width, height) else img.resize((width, height), PILImage.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8).reshape(height, width, -1)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].contiguous()

    def batch_preprocess(self, augment: Any, device: torch.device) -> Any:
        from training.data import preprocess_for

        return preprocess_for(self.mean, self.std, self.size, augment, device)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> EvalPreprocess:
        p, shape = info["preprocess"], info["input"]
        return cls(p["mode"], (shape["height"], shape["width"]), tuple(p["mean"]), tuple(p["std"]),
                   resize=info.get("task", "classification") != "segmentation")


@dataclass(frozen=True)
class LoadedRun:
    """A trained model in eval mode, its preprocessing and its class names (label order); a
    segmentation run's mask colours too (`palette`)."""

    model: nn.Module
    preprocess: EvalPreprocess
    classes: tuple[str, ...]
    spec: Spec
    info: dict[str, Any]

    @property
    def task(self) -> str:
        """The task the run trained for (run.json's `task`; classification before there were others)."""
        return str(self.info.get("task", "classification"))

    @property
    def palette(self) -> list[list[int]] | None:
        """A segmentation run's RGB colour per class (run.json's `palette`); None for classification."""
        found = self.info.get("palette")
        return [list(c) for c in found] if found is not None else None


def load_run(run_dir: str | Path, weights: Weights = "best", device: str = "cpu") -> LoadedRun:
    """The model of a run directory with its `best` (validation) or `final` weights, in eval mode.
    run.json must agree with spec.yaml and the weights with both, and the weights' checksum is
    verified: anything else is one RunDirError or CheckpointError line."""
    import torch

    from builder.lang.loading import load_spec
    from builder.model.build import build_model
    from training.checkpoint import load_weights
    from training.errors import CheckpointError
    from training.runfiles import check_info_fits, check_tensors

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    spec = load_spec(run_dir / SPEC_FILE)
    check_info_fits(info, spec, run_dir / RUN_INFO)
    if weights not in WEIGHT_FILES:
        raise RunDirError(f"weights must be best or final, not {weights!r}")
    path = run_dir / WEIGHT_FILES[weights]
    if weights == "best" and not path.exists():  # a run without validation has final weights only
        path = run_dir / WEIGHT_FILES["final"]
    if not path.exists():
        raise RunDirError(f"{run_dir} has no {path.name} (the run has not finished; resume it, or use --weights)")
    model = build_model(spec)
    state = load_weights(path)
    try:
        check_tensors(state, model.state_dict(), str(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{path} holds weights of another spec: {str(exc).removeprefix(f'{path} ')}") from None
    model.load_state_dict(state)
    return LoadedRun(model.to(torch.device(device)).eval(), EvalPreprocess.from_info(info),
                     tuple(info["classes"]), spec, info)
