"""The building blocks of every spec model: strictness, field docs, shared field types. No torch.

Every model is strict: unknown keys are rejected and `true` or `3.5` are not ints.
The docstring under each field is its description in the JSON Schema (editor hover text).
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from builder.lang.axes import NonNegativeAxes, PositiveAxes, axes_text, pair

Path = tuple[str | int, ...]  # a place in the data, as in builder.lang.errors

Activation = Literal[
    "relu", "relu6", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "elu", "hardswish", "hardsigmoid", "none",
]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
BlockName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field error pinned to `field` of the model that raises it (see errors.py)."""
    return PydanticCustomError("spec_rule", message.replace("{", "{{").replace("}", "}}"), {"field": field})


def field_docs(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """json_schema_extra: each field's attribute docstring as its description in the JSON Schema.

    Read from the source only when a schema is made: pydantic's use_attribute_docstrings, which
    gives the same descriptions, parses each model's source at import, about half of the start-up
    of `validate`. A field's docstring is the one in the class that declares the field."""
    properties = schema.get("properties", {})
    for name, info in cls.model_fields.items():
        owner = next(c for c in cls.__mro__ if name in vars(c).get("__annotations__", {}))
        doc = _attribute_docs(owner.__module__).get((owner.__qualname__, name))
        key = info.alias or name  # the schema names a field by its alias
        if doc and info.description is None and key in properties:
            properties[key]["description"] = doc


@cache
def _attribute_docs(module: str) -> dict[tuple[str, str], str]:
    """{(class name, field): docstring} of every top-level class of `module`, from one parse of its source."""
    docs: dict[tuple[str, str], str] = {}
    for node in ast.parse(inspect.getsource(sys.modules[module])).body:
        if isinstance(node, ast.ClassDef):
            for field, text in zip(node.body, node.body[1:], strict=False):
                if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                        and isinstance(text, ast.Expr) and isinstance(text.value, ast.Constant)
                        and isinstance(text.value.value, str)):
                    docs[(node.name, field.target.id)] = inspect.cleandoc(text.value.value)
    return docs


class StrictModel(BaseModel):
    """Base of every spec model: no unknown keys, no coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=field_docs, defer_build=True)


class Named(StrictModel):
    """What every block has: an optional module name (default block1, block2, ... in its list)."""

    name: BlockName | None = None
    """Module name of this block (features.<...>.<name>); default block<i>, its 1-based position."""


class WindowPoolSpec(StrictModel):
    """A max or average pooling window (floor mode, as nn.MaxPool2d's default)."""

    kind: Literal["max", "avg"]
    kernel_size: PositiveAxes = 3
    """Window size: an integer or [h, w]."""
    stride: PositiveAxes = 2
    """Window step (an integer or [h, w]); smaller than kernel_size gives AlexNet's overlapping pooling."""
    padding: NonNegativeAxes = 0
    """Implicit padding on each side (an integer or [h, w]); at most kernel_size/2 on each axis."""
    dilation: PositiveAxes = 1
    """Spacing of the window's elements (an integer or [h, w]), as nn.MaxPool2d's; avg pooling has none."""
    ceil_mode: bool = False
    """Round the output size up instead of down (torchvision's GoogLeNet pools)."""

    @model_validator(mode="after")
    def _padding_fits_kernel(self) -> WindowPoolSpec:
        # torch refuses pad > kernel/2 on an axis: the window would see only padding.
        (kh, kw), (ph, pw) = pair(self.kernel_size), pair(self.padding)
        if 2 * ph > kh or 2 * pw > kw:
            raise rule_error("padding", f"must be at most kernel_size/2 ({axes_text((kh // 2, kw // 2))})")
        if self.kind == "avg" and pair(self.dilation) != (1, 1):
            raise rule_error("dilation", "average pooling has no dilation (nn.AvgPool2d has none); "
                             "use a max pool or a dilated conv")
        return self


class NoPoolSpec(StrictModel):
    """No pooling layer."""

    kind: Literal["none"]


NO_POOL = NoPoolSpec(kind="none")  # shared: models are frozen, and inference asks for it per conv block


PoolSpec = Annotated[WindowPoolSpec | NoPoolSpec, Field(discriminator="kind")]
