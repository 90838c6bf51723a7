"""The sweep file: base specs, a grid and/or override sets, seeds, the train flags of every
variant, or a search (docs/sweeps.md). Schema only; builder.tools.sweep_plan reads it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from builder.lang.spec import NonNegativeInt, PositiveInt, StrictModel, rule_error
from builder.tools.search_config import SearchConfig


class TrainFlags(StrictModel):
    """The `train` flags every variant gets (the command line's flags win)."""

    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    seed: NonNegativeInt | None = None
    device: str | None = None
    threads: PositiveInt | None = None  # CPU threads of each variant (default: the CPUs divided by --jobs)
    init: str | None = None  # .safetensors weights every variant starts from, as `--init`
    data: str | None = None  # KIND[:ROOT], as `--data`


class SweepFile(StrictModel):
    """A sweep written down: base specs, a grid and/or override sets, seeds, flags, a search."""

    specs: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]  # relative to this file
    overrides: list[str] = []  # noqa: RUF012 - `--set` arguments every variant gets
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # noqa: RUF012 - PATH: [values]
    variants: list[dict[str, Any]] = []  # noqa: RUF012 - override sets, each PATH: value
    seeds: PositiveInt = 1
    jobs: PositiveInt = 1
    train: TrainFlags = TrainFlags()
    search: SearchConfig | None = None

    @model_validator(mode="after")
    def _search_alone(self) -> SweepFile:
        if self.search is not None and (self.grid or self.variants):
            raise rule_error("search", "a search samples its own variants; leave grid and variants out")
        if self.search is not None and len(self.specs) != 1:
            raise rule_error("specs", "a search takes exactly one base spec")
        return self
