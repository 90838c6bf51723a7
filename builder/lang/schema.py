"""JSON Schema of a spec file, from the pydantic models, for editors (yaml-language-server).

A spec with `extends` may leave out anything it inherits, so it is checked against a
"partial" copy of the schema in which nothing is required and `blocks` may be a patch. The
`training:` section is the trainer's; builder.tools.schema embeds it (this layer knows no trainer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from builder.lang.spec import Spec

SCHEMA_FILE = "spec.schema.json"  # committed in arch_specs/, kept in sync by a test


Embed = Callable[[dict[str, Any], dict[str, Any]], None]  # (the Spec's schema, its $defs): adds sections


def spec_schema(embed: Embed | None = None) -> dict[str, Any]:
    """The schema of a spec file: the full Spec, or the partial one when it `extends` a base;
    `embed` adds what this layer does not know (the training section) before the partial copy."""
    full = Spec.model_json_schema(ref_template="#/$defs/{model}")
    defs = full.pop("$defs")
    if embed is not None:
        embed(full, defs)
    partial = _partial(full)
    # a patch may change any field of any kind of block, so its items are the union of partial blocks
    any_partial_block = {"anyOf": partial["properties"]["blocks"]["items"]["anyOf"]}
    partial["properties"]["blocks"] = {
        "anyOf": [partial["properties"]["blocks"],
                  {"type": "object", "patternProperties": {"^[0-9]+$": any_partial_block},
                   "additionalProperties": False}],
        "description": "blocks replacing the inherited ones, or a patch {INDEX: {fields}} of them",
    }
    all_defs = {**defs, **{f"Partial{k}": _partial(v) for k, v in defs.items()}, "Spec": full, "PartialSpec": partial}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CNN architecture spec",
        "$defs": dict(sorted(all_defs.items())),
        "if": {"required": ["extends"]},
        "then": {"$ref": "#/$defs/PartialSpec"},
        "else": {"$ref": "#/$defs/Spec"},
    }


def _partial(node: Any) -> Any:
    """A copy with no `required` lists, every $ref pointing at the partial definitions, and every
    oneOf an anyOf (without required fields, a conv block is also a partial conv_transpose block)."""
    if isinstance(node, dict):
        return {
            ("anyOf" if k == "oneOf" else k): (v.replace("#/$defs/", "#/$defs/Partial") if k == "$ref" else _partial(v))
            for k, v in node.items() if k != "required"
        }
    return [_partial(v) for v in node] if isinstance(node, list) else node
