"""Where a run reports: log lines (rank 0 only) and TensorBoard scalars (and a task's pictures)
in RUN_DIR/tensorboard."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.metrics import EpochMetrics
from training.runfiles import BOARD_DIR

if TYPE_CHECKING:
    from torch import Tensor

Log = Callable[[str], None]


def print_line(line: str) -> None:
    print(line, flush=True)


def silent(line: str) -> None:
    pass


class Board:
    """TensorBoard scalars: per step `train/loss_step` and `train/lr`; per epoch every metric
    (`train/loss`, `val/acc`, `test/loss`, ..., `images_per_s`) and the task's picture of a few
    validation images (`val/predictions`). Disabled: every call is a no-op."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / BOARD_DIR))

    def step(self, global_step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", loss, global_step)
            self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, m: EpochMetrics, images_per_s: float) -> None:
        if self.writer is None:
            return
        for name, value in m.as_dict().items():
            if name != "epoch" and value is not None:
                self.writer.add_scalar(scalar_name(name), value, m.epoch)
        self.writer.add_scalar("images_per_s", images_per_s, m.epoch)
        self.writer.flush()

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def image(self, tag: str, picture: Tensor, epoch: int) -> None:
        """A uint8 (3, H, W) picture at `epoch`."""
        if self.writer is not None:
            self.writer.add_image(tag, picture, epoch, dataformats="CHW")
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def scalar_name(column: str) -> str:
    """metrics.csv column -> TensorBoard tag: train_loss -> train/loss; lr, seconds unchanged."""
    split, _, metric = column.partition("_")
    return f"{split}/{metric}" if metric else column
