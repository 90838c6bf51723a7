"""The shared trainer: trains any built spec on real data (see training.trainer).

Every name here loads on first use: `TrainingConfig` needs no torch, `train` imports it, and
`python -m builder validate` builds the training config's models only for a spec with a
`training:` section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.config import TrainingConfig
    from training.runinfo import load_run
    from training.tasks.segmentation import segment_image
    from training.trainer import TrainResult, train

__all__ = ["TrainResult", "TrainingConfig", "load_run", "segment_image", "train"]


def __getattr__(name: str) -> Any:
    if name == "TrainingConfig":
        from training import config

        return config.TrainingConfig
    if name in ("train", "TrainResult"):
        from training import trainer

        return getattr(trainer, name)
    if name == "load_run":
        from training import runinfo

        return runinfo.load_run
    if name == "segment_image":  # one image's mask from a segmentation run
        from training.tasks import segmentation

        return segmentation.segment_image
    raise AttributeError(f"module 'training' has no attribute {name!r}")
