"""JSON Schema of a spec file, from the pydantic models, for editors (yaml-language-server)."""

from __future__ import annotations

import json
from typing import Any

from builder.spec import Spec

SCHEMA_FILE = "spec.schema.json"  # committed in arch_specs/, kept in sync by a test


def spec_schema() -> dict[str, Any]:
    """The schema of a spec, with the `training:` section's own schema when it is available."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "CNN architecture spec"
    # `blocks` may also be a mapping {INDEX: {fields}} that patches an inherited list.
    blocks = schema["properties"]["blocks"]
    schema["properties"]["blocks"] = {
        "anyOf": [blocks, {"type": "object", "patternProperties": {"^[0-9]+$": {"type": "object"}},
                           "additionalProperties": False}],
        "title": "Blocks", "description": "conv blocks, or a patch {INDEX: {fields}} of the inherited ones",
    }
    _embed_training(schema)
    return schema


def _embed_training(schema: dict[str, Any]) -> None:
    try:
        from training.config import TrainingConfig
    except ImportError:  # the trainer is optional for the spec schema
        return
    training = TrainingConfig.model_json_schema(ref_template="#/$defs/{model}")
    schema.setdefault("$defs", {}).update(training.pop("$defs", {}))
    schema["$defs"]["TrainingConfig"] = training
    schema["properties"]["training"] = {"anyOf": [{"$ref": "#/$defs/TrainingConfig"}, {"type": "null"}]}


def schema_text() -> str:
    return json.dumps(spec_schema(), indent=2, sort_keys=True) + "\n"
