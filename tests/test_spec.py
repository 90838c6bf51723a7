"""The pydantic models: strict types, ranges, cross-field rules, width scaling."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from builder.lang.spec import BlockSpec, LRNSpec, NoNormSpec, Spec, WindowPoolSpec, apply_width, block_norm, block_pool


def _spec(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "t",
        "input": {"channels": 3, "height": 32, "width": 32},
        "num_classes": 10,
        "blocks": [{"out_channels": 8, "kernel_size": 3}],
    }
    data.update(over)
    return data


@pytest.mark.parametrize(
    ("field", "value"),
    [("out_channels", True), ("out_channels", 3.5), ("kernel_size", "3"), ("stride", 0), ("padding", -1)],
)
def test_block_fields_are_strict(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        BlockSpec.model_validate({"out_channels": 8, "kernel_size": 3, field: value})


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        BlockSpec.model_validate({"out_channels": 8, "kernel_size": 3, "kernal_size": 3})


def test_groups_must_divide_out_channels() -> None:
    with pytest.raises(ValidationError, match="divisible by groups"):
        BlockSpec.model_validate({"out_channels": 10, "kernel_size": 3, "groups": 4})


def test_pool_padding_at_most_half_kernel() -> None:
    with pytest.raises(ValidationError, match="kernel_size/2"):
        WindowPoolSpec.model_validate({"kind": "max", "kernel_size": 2, "padding": 2})


@pytest.mark.parametrize("dropout", [1.0, -0.1])
def test_dropout_range(dropout: float) -> None:
    with pytest.raises(ValidationError):
        Spec.model_validate(_spec(classifier={"dropout": dropout}))


def test_float_field_accepts_int_but_not_bool() -> None:
    assert Spec.model_validate(_spec(classifier={"dropout": 0})).classifier.dropout == 0
    with pytest.raises(ValidationError):
        Spec.model_validate(_spec(classifier={"dropout": False}))


def test_pool_and_norm_uses_defaults_and_block_overrides_win() -> None:
    spec = Spec.model_validate(
        _spec(blocks=[
            {"out_channels": 8, "kernel_size": 3, "pool_and_norm": True},
            {"out_channels": 8, "kernel_size": 3},
            {"out_channels": 8, "kernel_size": 3, "pool_and_norm": True, "norm": {"kind": "none"}},
        ])
    )
    first, second, third = spec.blocks
    assert isinstance(block_norm(spec, first), LRNSpec) and block_norm(spec, first).size == 5
    assert isinstance(block_norm(spec, second), NoNormSpec)
    assert block_pool(spec, second).kind == "none"
    assert isinstance(block_norm(spec, third), NoNormSpec) and block_pool(spec, third).kind == "max"


def test_width_scaling_rounds_half_up_and_respects_groups() -> None:
    spec = Spec.model_validate(
        _spec(width=0.5, blocks=[
            {"out_channels": 6, "kernel_size": 3},
            {"out_channels": 10, "kernel_size": 3, "groups": 2},
            {"out_channels": 7, "kernel_size": 3},
        ], classifier={"hidden": [101]})
    )
    scaled = apply_width(spec)
    # 6*0.5=3 must be a multiple of the next block's groups (2) -> 4; 10*0.5=5 with groups 2 -> 6;
    # 7*0.5=3.5 rounds half up -> 4; hidden 101*0.5=50.5 -> 51.
    assert [b.out_channels for b in scaled.blocks] == [4, 6, 4]
    assert scaled.classifier.hidden == [51]
    assert scaled.width == 1.0
