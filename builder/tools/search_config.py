"""The `search:` section of a sweep file: the Optuna search space, the pruner and the study
(run by builder.tools.search)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from builder.lang.spec import NonNegativeInt, PositiveInt, StrictModel, rule_error
from training.flags import MAX_VARIANTS


class IntParam(StrictModel):
    kind: Literal["int"]
    low: int
    high: int
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        return self


class FloatParam(StrictModel):
    kind: Literal["float"]
    low: float
    high: float
    log: bool = False  # sample uniformly in log space (learning rates, weight decay)

    @model_validator(mode="before")
    @classmethod
    def _ints_are_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):  # `low: 0` is a number here; strict mode would refuse the int
            return {k: float(v) if k in ("low", "high") and type(v) is int else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        return self


def _check_range(low: float, high: float, log: bool) -> None:
    if high <= low:
        raise rule_error("high", f"must be > low ({low}), got {high}")
    if log and low <= 0:
        raise rule_error("low", f"must be > 0 on a log scale, got {low}")


class CategoricalParam(StrictModel):
    kind: Literal["categorical"]
    choices: Annotated[list[Any], Field(min_length=1)]  # any YAML values, e.g. {kind: batchnorm}


class MedianPruner(StrictModel):
    """Stop a trial whose per-epoch metric is below the median of earlier trials at that epoch."""

    kind: Literal["median"]
    startup_trials: NonNegativeInt = 2  # trials that always run to the end first
    warmup_epochs: NonNegativeInt = 1  # epochs of each trial never pruned


class NoPruner(StrictModel):
    kind: Literal["none"]


class SearchConfig(StrictModel):
    """An Optuna study over `--set` paths; each trial is an ordinary run directory."""

    params: Annotated[
        dict[str, Annotated[IntParam | FloatParam | CategoricalParam, Field(discriminator="kind")]],
        Field(min_length=1),
    ]
    trials: Annotated[int, Field(ge=1, le=MAX_VARIANTS)] = 20  # the budget, over all workers together
    # A validation (or test) metric the task logs: val_acc, val_miou, test_dice, val_loss...; None: the
    # spec's training.monitor. A val_ metric falls back to its test_ column without a val split.
    metric: Annotated[str, Field(pattern=r"^(val|test)_[a-z_]+$")] | None = None
    pruner: Annotated[MedianPruner | NoPruner, Field(discriminator="kind")] = MedianPruner(kind="median")
    sampler: Literal["tpe", "random"] = "tpe"
    sampler_seed: NonNegativeInt | None = None
    study: str | None = None  # default: the sweep file's name
    storage: str | None = None  # default: sqlite:///<sweep dir>/study.db; --storage wins
