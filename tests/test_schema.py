"""The JSON Schema: in sync with the committed copy, and every shipped spec declares and passes it."""

from __future__ import annotations

import json
from collections.abc import Callable

import jsonschema
import pytest
import yaml
from conftest import SPECS

from builder.lang.schema import SCHEMA_FILE
from builder.tools.schema import schema_text, spec_schema

SHIPPED = sorted(SPECS.glob("*.yaml"))


def test_committed_schema_is_in_sync() -> None:
    hint = f"regenerate it: python -m builder schema > arch_specs/{SCHEMA_FILE}"
    assert (SPECS / SCHEMA_FILE).read_text() == schema_text(), hint


def test_cli_prints_the_schema(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = cli("schema")
    assert code == 0 and json.loads(out)["title"] == "CNN architecture spec"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_spec_points_editors_at_the_schema_and_passes_it(path: object) -> None:
    text = SPECS.joinpath(str(path)).read_text()
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={SCHEMA_FILE}"
    as_json = json.loads(json.dumps(yaml.safe_load(text.replace("1e-4", "1.0e-4"))))  # as an editor sees it
    jsonschema.validate(as_json, spec_schema())


def test_training_mapping_without_kind_means_the_default_kind() -> None:
    jsonschema.validate({"extends": "a.yaml", "training": {"optimizer": {"lr": 0.1, "momentum": 0.8}}}, spec_schema())


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "input": {"channels": 3, "height": 8, "width": 8}, "num_classes": 2,
         "blocks": [{"out_channels": 4, "kernal_size": 3}]},
        {"name": "x", "num_classes": 2, "blocks": [{"out_channels": 4, "kernel_size": 3}]},
        {"extends": "a.yaml", "blocks": {"0": {"kernal_size": 3}}},
        {"extends": "a.yaml", "num_classes": 0},
        {"extends": "a.yaml", "training": {"optimizer": {"kind": "adam", "momentum": 0.9}}},
        {"extends": "a.yaml", "training": {"optimizer": {"lr": 0.1, "nesterov": "yes"}}},
    ],
)
def test_schema_rejects_typos_and_missing_fields(bad: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, spec_schema())
