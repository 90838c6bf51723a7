"""From a spec file to a validated `Spec`: read -> extends -> --set -> validate -> width -> shapes.

Every step reports problems located in the file (or `--set` argument) a person must edit.
No torch here: `python -m builder validate` goes only this far.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path as FsPath
from typing import Any

import yaml

from builder.lang.errors import Document, Loc, Path, SpecError, validate
from builder.lang.expand import expand_document
from builder.lang.shapes import infer
from builder.lang.spec import Spec, apply_width
from builder.lang.yaml_io import load_document, parse_scalar

_PATH_SEG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def load_spec(path: str | FsPath, overrides: Sequence[str] = ()) -> Spec:
    """The validated, width-scaled spec of a file, or a SpecError listing every problem."""
    return spec_from_document(resolve_document(path, overrides))


def resolve_document(path: str | FsPath, overrides: Sequence[str] = ()) -> Document:
    """The raw document with `extends` merged in and `--set` overrides applied."""
    doc = _with_bases(FsPath(path), ())
    for arg in overrides:
        apply_override(doc, arg)
    return doc


def dump_spec(spec: Spec) -> str:
    """The fully resolved spec as YAML (defaults filled in); it loads back to an equal Spec."""
    data = spec.model_dump(mode="json", exclude={"extends"}, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def spec_from_document(doc: Document) -> Spec:
    """Validate a resolved document, expand its templates and repeats, and check its static shapes."""
    validate(Spec, doc)  # the spec as written, so expansion can trust its structure
    doc = expand_document(doc)
    spec = apply_width(validate(Spec, doc))
    problems = infer(spec).problems
    if problems:
        raise doc.diagnose(problems)
    return spec


# --- extends ----------------------------------------------------------------------------------


def _with_bases(path: FsPath, chain: tuple[FsPath, ...]) -> Document:
    doc = load_document(path)
    ref = doc.data.get("extends")
    if ref is None:
        return doc
    at = doc.locate(("extends",))
    base_path = _base_path(path, ref, at, (*chain, path.resolve()))
    try:
        base = _with_bases(base_path, (*chain, path.resolve()))
        spec_from_document(base)  # a base must be a valid spec on its own
    except SpecError as exc:
        n = len(exc.diagnostics)
        head = SpecError.at(at, f"base spec '{ref}' is invalid ({n} problem{'s' * (n > 1)} below)", ("extends",))
        raise SpecError(head.diagnostics + exc.diagnostics) from None
    return merge_documents(base, doc)


def _base_path(path: FsPath, ref: Any, at: Loc, chain: tuple[FsPath, ...]) -> FsPath:
    if not isinstance(ref, str) or not ref:
        raise SpecError.at(at, "must be a path to a base spec file", ("extends",))
    base = _display_path((path.parent / ref).resolve())
    if base.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base))
        raise SpecError.at(at, f"extends cycle: {cycle}", ("extends",))
    if not base.is_file():
        raise SpecError.at(at, f"base spec '{ref}' not found (looked for {base})", ("extends",))
    return base


def _display_path(path: FsPath) -> FsPath:
    """Relative to the working directory when below it, so messages show what a person typed."""
    try:
        return path.relative_to(FsPath.cwd())
    except ValueError:
        return path


def merge_documents(base: Document, child: Document) -> Document:
    """Child over base: mappings merge deeply, lists replace, `blocks: {INDEX: {...}}` patches."""
    over = {k: v for k, v in child.data.items() if k != "extends"}
    data = _merge(base.data, over)
    if isinstance(base.data.get("blocks"), list) and isinstance(over.get("blocks"), dict):
        data["blocks"] = _patch_blocks(base.data["blocks"], over["blocks"], child)
    merged = Document(data)
    for path in _paths(data):
        merged.locs[path] = child.locs.get(path) or base.locs[path]
        key = child.key_locs.get(path) or base.key_locs.get(path)
        if key is not None:
            merged.key_locs[path] = key
    return merged


def _merge(base: Any, over: Any) -> Any:
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    if "kind" in over and over["kind"] != base.get("kind"):
        return over  # another kind of norm or pool: the old kind's fields do not apply
    return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in over.items()}}


def _patch_blocks(blocks: list[Any], patches: dict[Any, Any], child: Document) -> list[Any]:
    out = list(blocks)
    for index, patch in patches.items():
        if not isinstance(index, int) or not 0 <= index < len(blocks):
            at = child.locate(("blocks", index), at_key=True)
            msg = f"a block patch key must be an index from 0 to {len(blocks) - 1}, got {index!r}"
            raise SpecError.at(at, msg, ("blocks",))
        out[index] = _merge(blocks[index], patch)
    return out


def _paths(data: Any, path: Path = ()) -> Iterator[Path]:
    yield path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


# --- --set overrides ----------------------------------------------------------------------------


def parse_path(text: str, at: Loc) -> Path:
    """'blocks[0].out_channels' -> ('blocks', 0, 'out_channels')."""
    segs: list[str | int] = []
    for part in text.split("."):
        matches = list(_PATH_SEG.finditer(part))
        if not matches or "".join(m.group(0) for m in matches) != part or matches[0].group(1) is None:
            raise SpecError.at(at, f"bad field path '{text}' (expected like blocks[0].out_channels)")
        segs += [m.group(1) if m.group(1) else int(m.group(2)) for m in matches]
    return tuple(segs)


def apply_override(doc: Document, arg: str, source: str | None = None) -> None:
    """Apply one `PATH=VALUE` override in place; its values are located at the argument.

    `source` names the argument in messages (default `--set PATH=VALUE`; a trainer flag such
    as `--epochs 0` passes its own spelling).
    """
    at = Loc(source or f"--set {arg}")
    path_text, sep, value_text = arg.partition("=")
    if not sep:
        raise SpecError.at(at, "expected PATH=VALUE, like num_classes=100")
    path = parse_path(path_text.strip(), at)
    try:
        value = parse_scalar(value_text, at.source)
    except SpecError:
        raise SpecError.at(at, f"invalid YAML value '{value_text}'") from None
    _set(doc.data, path, value, at)
    doc.locs = {p: loc for p, loc in doc.locs.items() if p[: len(path)] != path}
    doc.locs.update({(*path, *sub): at for sub in _paths(value)})
    doc.key_locs[path] = at


def _set(data: Any, path: Path, value: Any, at: Loc) -> None:
    parent = data
    for depth, seg in enumerate(path):
        where = ".".join(str(s) for s in path[:depth]) or "the spec"
        last = depth == len(path) - 1
        if isinstance(parent, dict) and isinstance(seg, str):
            if last:
                parent[seg] = value
                return
            parent = parent.setdefault(seg, {})
        elif isinstance(parent, list) and isinstance(seg, int):
            if seg >= len(parent):
                raise SpecError.at(at, f"index {seg} is out of range: {where} has {len(parent)} items")
            if last:
                parent[seg] = value
                return
            parent = parent[seg]
        else:
            kind = "a list" if isinstance(parent, list) else "a mapping" if isinstance(parent, dict) else "a value"
            raise SpecError.at(at, f"cannot index {where} ({kind}) with {seg!r}")
