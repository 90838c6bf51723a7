"""The sweep file: base specs, a grid and/or override sets, seeds, the train flags of every
variant, or a search (docs/sweeps.md). Schema only; builder.tools.sweep_plan reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, model_validator

from builder.lang.spec import StrictModel, rule_error
from builder.tools.search_config import SearchConfig
from training.flags import MAX_COUNT, train_flags_model

if TYPE_CHECKING:
    TrainFlags = StrictModel
else:  # the train flags every variant gets, by dest (`batch_size: 64`), as train's own flags define them
    TrainFlags = train_flags_model()


class SweepFile(StrictModel):
    """A sweep written down: base specs, a grid and/or override sets, seeds, flags, a search."""

    specs: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]  # relative to this file
    overrides: list[str] = []  # noqa: RUF012 - `--set` arguments every variant gets
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}  # noqa: RUF012 - PATH: [values]
    variants: list[dict[str, Any]] = []  # noqa: RUF012 - override sets, each PATH: value
    seeds: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    jobs: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1
    train: TrainFlags = TrainFlags()
    search: SearchConfig | None = None

    @model_validator(mode="after")
    def _search_alone(self) -> SweepFile:
        if self.search is not None and (self.grid or self.variants):
            raise rule_error("search", "a search samples its own variants; leave grid and variants out")
        if self.search is not None and len(self.specs) != 1:
            raise rule_error("specs", "a search takes exactly one base spec")
        return self
