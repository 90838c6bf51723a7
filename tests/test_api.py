"""The Python API at its boundary: wrong argument types are one clear SpecError, not a deep traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import SPECS

import builder
from builder import SpecError, build_model, load_spec, summarize


@pytest.fixture(scope="module")
def spec() -> builder.Spec:
    return load_spec(SPECS / "alexnet_digits.yaml")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: build_model("alexnet.yaml"),
         "build_model: error: spec: must be a Spec (from load_spec), got the path 'alexnet.yaml'; load it first"),
        (lambda s: build_model({"name": "x"}), "build_model: error: spec: must be a Spec (from load_spec), got dict"),
        (lambda s: build_model(s, check_memory="no"), "build_model: error: check_memory: must be true or false"),
        (lambda s: summarize(None), "summarize: error: spec: must be a Spec (from load_spec), got NoneType None"),
        (lambda s: summarize(s, batch_size=True), "summarize: error: batch_size: must be an integer >= 1, got bool"),
        (lambda s: summarize(s, batch_size=0), "summarize: error: batch_size: must be an integer >= 1, got 0"),
        (lambda s: summarize(s, depth=2.0), "summarize: error: depth: must be an integer >= 0, got float 2.0"),
        (lambda s: summarize(s, device=0), "summarize: error: device: must be a device name"),
    ],
)
def test_bad_arguments_are_one_clear_error(spec: builder.Spec, call: Callable[[Any], object], message: str) -> None:
    with pytest.raises(SpecError) as info:
        call(spec)
    assert len(info.value.diagnostics) == 1 and str(info.value).startswith(message)


def test_good_arguments_pass_through(spec: builder.Spec) -> None:
    assert sum(p.numel() for p in build_model(spec, check_memory=False).parameters()) == 2_979_146
    assert summarize(spec, batch_size=2, depth=1).ok
