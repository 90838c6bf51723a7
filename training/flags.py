"""Every flag that several commands take, defined once, with the bounds its value is checked
against as the command line is parsed (docs/reliability.md lists them).

The train flags (`TRAIN_FLAGS`) are `train`'s and `sweep`'s; each sets a field of the spec's
`training:` section like `--set`, located at the flag. A sweep file's `train:` section is the
same list (`train_flags_model`). `--data`, `--device` and `--weights` are shared with evaluate,
predict and export. Torch-free.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, create_model

from builder.lang.errors import Diagnostic, Loc, SpecError
from builder.lang.spec import NonNegativeInt, PositiveInt, StrictModel

MAX_BATCH = 65_536  # images per step (train, sweep, bench, summarize's dummy input)
MAX_LR = 1e6  # a learning rate: far above any that trains (tests diverge on purpose at 1e6), far below overflow
MAX_WORKERS = 64  # decoding processes of predict
MAX_COUNT = 1_000  # --seeds, --jobs, --topk
MAX_DEPTH = 100  # summarize --depth
MAX_VARIANTS = 10_000  # runs one sweep or search may plan: more is refused at once, with the count


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A whole number from `low` to `high` (the message names the flag: see Flag.add)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"must be a whole number, got '{text}'") from None
        if not low <= value <= high:
            raise ValueError(f"must be from {low:,} to {high:,}, got {value:,}")
        return value

    return parse


@dataclass(frozen=True)
class Flag:
    """One command-line flag: its name, help, bounds and (for a train flag) the field it sets."""

    name: str
    dest: str
    metavar: str
    help: str
    field: str | None = None  # a train flag's field, set like `--set FIELD=VALUE`
    check: Callable[[str], Any] | None = None  # parses a value, or raises ValueError(why); not for train flags
    limit: float | None = None  # a train flag's upper bound, beyond the training config's own checks
    schema: Any = str  # the value's type in a sweep file's `train:` section
    choices: Sequence[str] | None = None

    def add(self, parser: argparse.ArgumentParser, *, default: Any = None, more: str = "") -> None:
        """Register on `parser`; `more` adds what the flag means to that command."""
        text = self.help + (f" (sets {self.field})" if self.field else "") + more
        parser.add_argument(self.name, dest=self.dest, metavar=self.metavar if self.choices is None else None,
                            default=default, choices=self.choices, type=self._parse, help=text)

    def _parse(self, text: str) -> Any:
        """The checked value: a located one-line error (exit 2) when out of bounds. A train flag
        keeps the text as typed: it is applied like `--set` and checked with the training config."""
        if self.check is None:
            return text
        try:
            return self.check(text)
        except ValueError as exc:
            raise SpecError.at(Loc(f"{self.name} {text}"), str(exc)) from None

    def over_limit(self, value: Any) -> Diagnostic | None:
        """A train flag's value beyond its limit (what does not parse, the training config reports)."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        if self.limit is None or self.field is None or not (math.isfinite(number) and number > self.limit):
            return None
        path = tuple(self.field.split("."))
        limit = f"{self.limit:,.0f}" if float(self.limit).is_integer() else f"{self.limit:g}"
        return Diagnostic(Loc(f"{self.name} {value}"), path, f"must be at most {limit}, got {value}")


DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"

TRAIN_FLAGS = (
    Flag("--epochs", "epochs", "N", "number of epochs", "training.epochs", schema=PositiveInt),
    Flag("--batch-size", "batch_size", "N", "mini-batch size", "training.batch_size",
         limit=MAX_BATCH, schema=Annotated[int, Field(ge=1, le=MAX_BATCH)]),
    Flag("--lr", "lr", "LR", "learning rate, the peak one for one_cycle", "training.optimizer.lr",
         limit=MAX_LR, schema=Annotated[float, Field(gt=0, le=MAX_LR, allow_inf_nan=False)]),
    Flag("--seed", "seed", "N", "seed of weights, shuffling, augmentation and dropout", "training.seed",
         schema=NonNegativeInt),
    Flag("--device", "device", "DEVICE", DEVICE_HELP, "training.device"),
    Flag("--threads", "threads", "N", "CPU threads (default: torch's, one per core)", "training.threads",
         schema=PositiveInt),
    Flag("--init", "init", "PATH", "start from these .safetensors weights (fine-tuning)", "training.init.weights"),
)
DATA = Flag("--data", "data", "KIND[:ROOT]", "dataset: digits, fake, cifar10[:ROOT], image_folder:ROOT; "
            "segmentation: shapes, seg_folder:ROOT, "
            "seg_csv:CSV_OR_DIR")
RUN_FLAGS = (*TRAIN_FLAGS, DATA)  # what a sweep passes on to each variant's `train`
DEVICE = Flag("--device", "device", "DEVICE", DEVICE_HELP)
WEIGHTS = Flag("--weights", "weights", "", "best (the best validation epoch; default) or final (the last epoch)",
               choices=("best", "final"))


def add_run_flags(parser: argparse.ArgumentParser, data_help: str) -> None:
    """The train flags and --data (`data_help`: what the dataset is for this command)."""
    for flag in TRAIN_FLAGS:
        flag.add(parser)
    DATA.add(parser, more=data_help)


def train_flags_model() -> type[StrictModel]:
    """A sweep file's `train:` section: every run flag by its dest, typed and bounded as on the
    command line (the command line's flags win)."""
    fields: dict[str, Any] = {f.dest: (f.schema | None, None) for f in RUN_FLAGS}
    return create_model("TrainFlags", __base__=StrictModel, **fields)
