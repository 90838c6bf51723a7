"""The one evaluation loop: a split's loss and metrics, for the trainer's epochs and for `evaluate`.

Each batch's summed loss and its task tally are added up on the device in float64 (exact
counts, and the same sums as adding each batch's value on the host), read once at the end,
and summed over the ranks of a distributed run (each rank evaluates its share of the split).
With `tta`, each batch's outputs are the mean over its test-time views (training/tta.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from training.config import TTAConfig
from training.data.splits import Split
from training.device import autocast
from training.distributed import Dist, eval_indices, read, total
from training.tasks.base import Keeper, Task
from training.tta import tta_forward

Forward = Callable[[Tensor], Tensor]


@torch.inference_mode()
def evaluate_split(
    forward: Forward, preprocess: Forward, split: Split, task: Task, *, batch_size: int, precision: str,
    device: torch.device, dist: Dist | None = None, keep: Keeper | None = None, tta: TTAConfig | None = None,
) -> tuple[float, dict[str, float]]:
    """(mean loss, the task's metrics) of `forward` over the whole split, in eval batches, no
    augmentation but `tta`'s; `keep` sees every batch (uint8 images, outputs, targets)."""
    dist, forward = dist or Dist(), tta_forward(forward, tta)
    on = torch.device("cpu") if device.type == "mps" else device  # MPS has no float64
    sums = torch.zeros(1 + task.tally_size, dtype=torch.float64, device=on)
    for images, targets in split.batches(eval_indices(dist, len(split), batch_size)):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(precision, device.type):
            outputs = forward(preprocess(images))
        sums += batch_sums(task, outputs, targets, on)
        if keep is not None:
            keep.add(images, outputs, targets)
    loss_sum, *tally = total(dist, *read(sums))
    return loss_sum / len(split), task.summarize(tally, len(split))


def batch_sums(task: Task, outputs: Tensor, targets: Tensor, on: torch.device) -> Tensor:
    """[summed loss, *tally] of one batch, float64 on `on`."""
    loss, tally = task.loss_sum(outputs, targets).view(1).to(on), task.tally(outputs, targets).to(on)
    return torch.cat([loss.double(), tally.double()])
