"""The JSON Schema of a spec file as `python -m builder schema` prints it: the spec language's
(builder.lang.schema) with the trainer's `training:` section embedded, assembled here where both
are known."""

from __future__ import annotations

import json
from typing import Any

from builder.lang.schema import spec_schema as language_schema
from training.config import DEFAULT_KINDS, TrainingConfig


def spec_schema() -> dict[str, Any]:
    """The schema of a spec file, its training section included."""
    return language_schema(embed_training)


def schema_text() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"


def embed_training(root: dict[str, Any], defs: dict[str, Any]) -> None:
    """`training:` as the TrainingConfig schema (or null), its definitions added to `defs`."""
    training = TrainingConfig.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(training.pop("$defs", {}))
    for field, kind in DEFAULT_KINDS.items():
        _kind_optional(training["properties"][field], kind, defs)
    defs["TrainingConfig"] = training
    root["properties"]["training"] = {"anyOf": [{"$ref": "#/$defs/TrainingConfig"}, {"type": "null"}],
                                      "description": "Training recipe; see the README."}


def _kind_optional(union: dict[str, Any], default_kind: str, defs: dict[str, Any]) -> None:
    """A mapping without `kind` means the default kind (see training.config), so the default
    member does not require `kind`, and the union becomes anyOf (several members may match)."""
    default_ref = union.pop("discriminator")["mapping"][default_kind]
    union["anyOf"] = union.pop("oneOf")
    member = defs[default_ref.removeprefix("#/$defs/")]
    member["required"] = [r for r in member.get("required", []) if r != "kind"]
