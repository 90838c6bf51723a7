"""Making a run's task: above the config (which validates against the kinds in training.tasks)
and the task implementations, each imported when its task is made (classification and
segmentation import torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from training.config import TrainingConfig
from training.tasks import Task

if TYPE_CHECKING:
    from training.runinfo import LoadedRun


def _classification(config: TrainingConfig, classes: tuple[str, ...]) -> Task:
    from training.tasks.classification import ClassificationTask

    return ClassificationTask(classes, config.label_smoothing)


def _segmentation(config: TrainingConfig, classes: tuple[str, ...]) -> Task:
    from training.tasks.segmentation import SegmentationTask

    return SegmentationTask.of(config, classes)


MAKERS: dict[str, Callable[[TrainingConfig, tuple[str, ...]], Task]] = {
    "classification": _classification,
    "segmentation": _segmentation,
}  # the keys are training.tasks.TASKS's (tests/test_segmentation_task.py checks)


def make_task(config: TrainingConfig, classes: tuple[str, ...]) -> Task:
    """The task of `config`'s dataset, for a run whose outputs are `classes`."""
    return MAKERS[config.dataset.task](config, classes)


def run_task(run: LoadedRun, config: TrainingConfig | None = None) -> Task:
    """The task of a trained run (its own training config unless another is given)."""
    return make_task(config or TrainingConfig.model_validate(run.spec.training or {}), run.classes)
