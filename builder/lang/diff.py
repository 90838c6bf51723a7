"""What differs between two specs, block by block: fields, output shapes, parameters. No torch."""

from __future__ import annotations

from typing import Any

from builder.lang.registry import kind_def, walk_blocks
from builder.lang.shapes import BlockShape, ShapeReport, infer
from builder.lang.spec import Spec


def effective_block(spec: Spec, block: Any) -> dict[str, Any]:
    """A block's fields with defaults applied: what it really builds (child blocks left out; its kind says)."""
    return kind_def(block).fields(spec, block)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = list(a) + [k for k in b if k not in a]
    return [f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}" for k in keys if a.get(k) != b.get(k)]


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "-"}[value]
    return str(value)


def _shape(block: BlockShape | None) -> str:
    return "x".join(map(str, block.out_shape)) if block else "-"


def _section(title: str, changes: list[str]) -> list[str]:
    return [f"{title}: same"] if not changes else [f"{title}:", *(f"    {c}" for c in changes)]


def _block_lines(a: Spec, b: Spec, sa: BlockShape | None, sb: BlockShape | None, blocks: tuple[Any, Any],
                 name: str) -> list[str]:
    if sa is None or sb is None:
        only = sa or sb
        if only is None:  # inference stopped before this block
            return [f"{name}: only in {'B' if blocks[0] is None else 'A'}"]
        return [f"{name}: only in {'B' if sa is None else 'A'}: output {_shape(only)}, {only.params:,} parameters"]
    changes = _changes(effective_block(a, blocks[0]), effective_block(b, blocks[1]))
    if sa.out_shape != sb.out_shape:
        changes.append(f"output: {_shape(sa)} -> {_shape(sb)}")
    if sa.params != sb.params:
        changes.append(f"parameters: {_delta(sa.params, sb.params)}")
    return _section(name, changes)


def _all_blocks(spec: Spec, report: ShapeReport) -> dict[str, tuple[Any, BlockShape | None]]:
    shapes = {s.name: s for s in report.all_blocks}
    return {name: (block, shapes.get(name)) for name, block in walk_blocks(spec.blocks)}


def _union(a: list[str], b: list[str]) -> list[str]:
    """A's names in order, each of B's own names placed after the name it follows in B."""
    out = list(a)
    for i, name in enumerate(b):
        if name not in out:
            out.insert(out.index(b[i - 1]) + 1 if i else 0, name)
    return out


def _delta(a: int, b: int) -> str:
    pct = f", {100 * (b - a) / a:+.1f}%" if a else ""
    return f"{a:,} -> {b:,} ({b - a:+,}{pct})"


def _head_fields(spec: Spec) -> dict[str, Any]:
    """The head's fields; its kind too, unless it is the classifier (which may be written without)."""
    fields = _flatten(spec.the_head.model_dump())
    if fields.get("kind", "classifier") == "classifier":
        fields.pop("kind", None)
    return fields


def diff_specs(a: Spec, b: Spec) -> list[str]:
    """Lines describing B relative to A: top-level fields, each block, the classifier, totals."""
    ra, rb = infer(a), infer(b)
    top = _changes(
        _flatten(a.model_dump(include={"name", "input", "classes"})),
        _flatten(b.model_dump(include={"name", "input", "classes"})),
    )
    lines = _section("spec", top)
    ba, bb = _all_blocks(a, ra), _all_blocks(b, rb)
    only: list[str] = []  # blocks in one spec only: their children are not listed again
    for name in _union(list(ba), list(bb)):
        if any(name.startswith(f"{o}.") for o in only):
            continue
        (xa, sa), (xb, sb) = ba.get(name, (None, None)), bb.get(name, (None, None))
        block = _block_lines(a, b, sa, sb, (xa, xb), name)
        if xa is None or xb is None:
            only.append(name)
        if "." not in name or block != [f"{name}: same"]:  # nested blocks only when they differ
            lines += block
    head = _changes(_head_fields(a), _head_fields(b))
    if ra.flatten != rb.flatten:
        head.append(f"flatten: {ra.flatten} -> {rb.flatten}")
    if ra.classifier_params != rb.classifier_params:
        head.append(f"parameters: {_delta(ra.classifier_params, rb.classifier_params)}")
    both = {getattr(s.the_head, "kind", "classifier") for s in (a, b)}
    lines += _section("classifier" if both == {"classifier"} else "head", head)
    lines.append(f"total parameters: {_delta(ra.total_params, rb.total_params)}")
    return lines
