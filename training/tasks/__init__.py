"""The tasks by name. Torch-free at import: a task's module is imported when one is made.

A dataset config names its task (`task` of training.config's dataset kinds); `make_task`
makes that task for a run. See training/tasks/base.py for the interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.tasks.base import Metric, PredictRequest, Task, TaskKind, columns

if TYPE_CHECKING:
    from training.config import TrainingConfig
    from training.runinfo import LoadedRun

ACCURACY = Metric("acc", "accuracy", "top-1 accuracy (%)")
SEGMENTATION_METRICS = (
    Metric("miou", "mIoU", "mean IoU", percent=False),
    Metric("dice", "Dice", "mean Dice", percent=False),
    Metric("pixel_acc", "pixel accuracy", "pixel accuracy (%)"),
)


def _classification(config: TrainingConfig, classes: tuple[str, ...]) -> Task:
    from training.tasks.classification import ClassificationTask

    return ClassificationTask(classes, config.label_smoothing)


def _segmentation(config: TrainingConfig, classes: tuple[str, ...]) -> Task:
    from training.tasks.segmentation import SegmentationTask

    data: Any = config.dataset  # a segmentation dataset kind (training.config)
    return SegmentationTask(classes, data.ignore_index, data.loss, data.palette)


TASKS: dict[str, TaskKind] = {
    "classification": TaskKind("classification", (ACCURACY,), _classification),
    "segmentation": TaskKind("segmentation", SEGMENTATION_METRICS, _segmentation),
}

__all__ = [
    "ACCURACY", "SEGMENTATION_METRICS", "TASKS", "Metric", "PredictRequest", "Task", "TaskKind", "columns",
    "make_task", "run_task", "task_kind",
]


def task_kind(name: str) -> TaskKind:
    return TASKS[name]


def make_task(config: TrainingConfig, classes: tuple[str, ...]) -> Task:
    """The task of `config`'s dataset, for a run whose outputs are `classes`."""
    return TASKS[config.dataset.task].make(config, classes)


def run_task(run: LoadedRun, config: TrainingConfig | None = None) -> Task:
    """The task of a trained run (its own training config unless another is given)."""
    from training.config import TrainingConfig

    return make_task(config or TrainingConfig.model_validate(run.spec.training or {}), run.classes)
