"""The kinds of task by name (their metrics and defaults), torch-free: what the config validates.

A dataset config names its task (`task` of training.config's dataset kinds); `make_task`
(training.tasks.make, above the config) makes that task for a run. See training/tasks/base.py
for the interface.
"""

from __future__ import annotations

from training.tasks.base import Metric, PredictRequest, Task, TaskKind, columns

ACCURACY = Metric("acc", "accuracy", "top-1 accuracy (%)")
SEGMENTATION_METRICS = (
    Metric("miou", "mIoU", "mean IoU", percent=False),
    Metric("dice", "Dice", "mean Dice", percent=False),
    Metric("pixel_acc", "pixel accuracy", "pixel accuracy (%)"),
)

TASKS: dict[str, TaskKind] = {
    "classification": TaskKind("classification", (ACCURACY,)),
    "segmentation": TaskKind("segmentation", SEGMENTATION_METRICS),
}

__all__ = [
    "ACCURACY", "SEGMENTATION_METRICS", "TASKS", "Metric", "PredictRequest", "Task", "TaskKind", "columns",
    "task_kind",
]


def task_kind(name: str) -> TaskKind:
    return TASKS[name]
