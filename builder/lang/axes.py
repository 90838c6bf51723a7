"""Per-axis window fields: `kernel_size: 3` or `kernel_size: [1, 7]` (height, width). No torch.

A field of this type holds an int (both axes) or a list of exactly two ints, kept as written so
square specs dump, diff and label as before. Validation gives one located error per field (a
plain union would give one per member): an int keeps pydantic's own messages ("must be > 0,
got 0"), a list of three values is "must be an integer or [h, w] ...".
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import PydanticCustomError, PydanticKnownError

Pair = tuple[int, int]  # (height, width)
AxesValue = int | list[int]
AnyAxes = int | list[int] | tuple[int, int]  # a value as written, or one computed per axis


def _check(minimum: int) -> Any:
    """A validator of one axes field whose values must be >= minimum (strict ints, not bools)."""

    def one(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticKnownError("int_type")
        if value < minimum:
            raise PydanticKnownError("greater_than_equal" if minimum == 0 else "greater_than",
                                     {"ge": 0} if minimum == 0 else {"gt": minimum - 1})
        return value

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> AxesValue:
        # the handler (a plain union) only gives the JSON Schema: it would report every member's error
        if not isinstance(value, list):
            return one(value)
        if len(value) != 2:
            raise PydanticCustomError("axes_length", "must be an integer or [h, w] (exactly two values), got "
                                      "{count} values", {"count": len(value)})
        try:
            return [one(v) for v in value]
        except PydanticKnownError:
            raise PydanticCustomError("axes_value", "[h, w] must be two integers >= {minimum}, got {value}",
                                      {"minimum": minimum, "value": str(value)}) from None

    return WrapValidator(check)


PositiveAxes = Annotated[
    Annotated[int, Field(gt=0)] | Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=2, max_length=2)],
    _check(1),
]
"""An int > 0 or [h, w] of them."""
NonNegativeAxes = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)],
    _check(0),
]
"""An int >= 0 or [h, w] of them."""


def pair(value: AnyAxes) -> Pair:
    """(height, width) of an axes value: 3 -> (3, 3), [1, 7] -> (1, 7)."""
    if isinstance(value, int):
        return value, value
    h, w = value
    return h, w


def axes_text(value: AnyAxes) -> str:
    """An axes value as a label shows it: 3 and [3, 3] -> '3', [1, 7] -> '1x7'."""
    h, w = pair(value)
    return str(h) if h == w else f"{h}x{w}"


def torch_arg(value: AnyAxes) -> int | Pair:
    """What torch's layers take: the int as written, a list as an (h, w) tuple."""
    return value if isinstance(value, int) else pair(value)
