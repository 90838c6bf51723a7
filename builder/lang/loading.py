"""From a spec file to a validated `Spec`: find -> read -> extends -> --set -> validate -> width -> shapes.

Every step reports problems located in the file (or `--set` argument) a person must edit.
A spec is named by a path, or by the name of a shipped spec (`alexnet`, `alexnet.yaml`): see
`find_spec`. No torch here: `python -m builder validate` goes only this far.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path as FsPath
from typing import Any

from builder.lang.errors import Document, Loc, Path, SpecError, format_path, suggest, validate
from builder.lang.expand import expand_document
from builder.lang.kinds.residual import apply_stochastic_depth
from builder.lang.shapes import ShapeReport, infer
from builder.lang.spec import Spec, apply_width
from builder.lang.yaml_io import dump, load_document, parse_scalar

_PATH_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")  # name, then any [INDEX]
MAX_PATH_CHARS = 4096  # PATH_MAX on Linux; longer spec paths are refused before the OS sees them
SHAPE_FIELDS = ("input", "blocks", "defaults", "width", "width_divisor")  # what a shape problem depends on


def load_spec(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Spec:
    """The validated, width-scaled spec of a file or shipped spec name, or a SpecError listing every problem."""
    return spec_from_document(resolve_document(path, overrides))


def resolve_document(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> Document:
    """The raw document with `extends` merged in and `--set` overrides applied."""
    _check_overrides(overrides)
    doc = _with_bases(find_spec(path), ())
    for arg in overrides:
        apply_override(doc, arg)
    return doc


def _check_overrides(overrides: Any) -> None:
    at = Loc("load_spec")
    if isinstance(overrides, (str, bytes)):
        raise SpecError.at(at, f"must be a list of PATH=VALUE strings, not one string (write [{overrides!r}])",
                           ("overrides",))
    if not isinstance(overrides, Sequence) or not all(isinstance(o, str) for o in overrides):
        raise SpecError.at(at, f"must be a list of PATH=VALUE strings, got {overrides!r:.60}", ("overrides",))


# --- finding a spec: a path, or a shipped spec by name -----------------------------------------


def shipped_dir() -> FsPath:
    """The shipped specs: `builder/arch_specs` when installed, else the checkout's `arch_specs/`."""
    package = FsPath(__file__).resolve().parents[1]
    installed = package / "arch_specs"
    return installed if installed.is_dir() else package.parent / "arch_specs"


def shipped_specs() -> list[FsPath]:
    """Every shipped spec file (any `.yaml` below the shipped folder, hidden ones aside), in path order."""
    root = shipped_dir()
    found = (p for p in root.rglob("*.yaml") if p.is_file())
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts))


def shipped_name(path: FsPath) -> str:
    """A shipped spec's name: its path below the shipped folder, like `alexnet.yaml`."""
    return path.relative_to(shipped_dir()).as_posix()


def find_spec(ref: str | os.PathLike[str], at: Loc | None = None, near: FsPath | None = None) -> FsPath:
    """The spec file `ref` names: an existing path (relative to `near`, default the working
    directory) as it is; else the shipped spec whose file name, stem or path below arch_specs/
    it is. Missing or ambiguous names are a SpecError at `at` (default the reference itself).
    """
    field: Path = ("extends",) if near is not None else ()
    text = _check_ref(ref, at, field)
    at = at or Loc(_shown(text), 1, 1)
    path = near / text if near is not None else FsPath(text)
    if _stat(path, at, field) is not None:
        return path
    found = _shipped_matches(text)
    if len(found) == 1:
        return _display_path(found[0])
    names = [shipped_name(p) for p in found]
    if names:
        raise SpecError.at(at, f"'{text}' names {len(names)} shipped specs: {', '.join(names)}; "
                               f"give one of these paths instead", field)
    where = "no such file" if near is None else f"base spec '{text}' not found (looked for {path})"
    hint = suggest(FsPath(text).name, [shipped_name(p) for p in shipped_specs()])
    raise SpecError.at(at, f"{where}, and no shipped spec has that name{hint}", field)


def _check_ref(ref: Any, at: Loc | None, field: Path) -> str:
    """The reference as text, refusing what no file system would accept."""
    if not isinstance(ref, (str, os.PathLike)):
        raise SpecError.at(at or Loc("load_spec"), f"a spec path must be a str or a path, got {type(ref).__name__}")
    text = os.fspath(ref)
    if not isinstance(text, str):
        raise SpecError.at(at or Loc("load_spec"), "a spec path must be text, not bytes")
    at = at or Loc(_shown(text), 1, 1)
    problem = ("is empty" if not text else "contains a NUL character" if "\0" in text
               else f"is longer than {MAX_PATH_CHARS} characters" if len(text) > MAX_PATH_CHARS else "")
    if problem:
        raise SpecError.at(at, f"the spec path {problem}", field)
    return text


def _shown(text: str) -> str:
    """A spec path as messages show it: at most 80 characters, '' when empty."""
    return (text if len(text) <= 80 else text[:77] + "...") or "''"


def _stat(path: FsPath, at: Loc, field: Path = ()) -> os.stat_result | None:
    """The file's status, None when it does not exist, or a located error (loop, name too long...)."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        reason = {errno.ELOOP: "symlink loop", errno.ENAMETOOLONG: "file name too long"}.get(exc.errno or 0)
        raise SpecError.at(at, f"cannot read {path}: {reason or exc.strerror or exc}", field) from None


def _shipped_matches(text: str) -> list[FsPath]:
    """Shipped specs named by `text`: `alexnet`, `alexnet.yaml`, or `sub/x.yaml` below arch_specs/."""
    key = text.replace(os.sep, "/").removesuffix(".yaml")
    if not key or FsPath(text).is_absolute() or key.startswith(".") or "/." in key:
        return []
    root = shipped_dir()
    return [p for p in shipped_specs()
            if key == p.relative_to(root).with_suffix("").as_posix() or ("/" not in key and key == p.stem)]


def dump_spec(spec: Spec) -> str:
    """The fully resolved spec as YAML (defaults filled in); it loads back to an equal Spec (a
    SpecError when it nests deeper than the reader's limit)."""
    data = spec.model_dump(mode="json", exclude={"extends"}, exclude_none=True)
    return dump(data, f"the resolved spec {spec.name}")


def spec_from_document(doc: Document) -> Spec:
    """Validate a resolved document, expand its templates and repeats, and check its static shapes."""
    return checked_spec(doc)[0]


def checked_spec(doc: Document) -> tuple[Spec, ShapeReport]:
    """spec_from_document's spec and the shape report it was checked with (for a caller that
    prints shapes: inferring them again costs a densenet201 validate about 10 ms)."""
    validate(Spec, doc)  # the spec as written, so expansion can trust its structure
    expanded = expand_document(doc)
    spec = apply_stochastic_depth(apply_width(validate(Spec, expanded)))
    report = infer(spec)
    if report.problems:
        error = expanded.diagnose(report.problems)
        # what a variant changed is read from the spec as written: expansion mixes the files' values
        raise SpecError([replace(d, message=d.message + _changed_elsewhere(doc, d.loc)) for d in error.diagnostics])
    return spec, report


def _changed_elsewhere(doc: Document, loc: Loc) -> str:
    """'; input is set at child.yaml:2:8': the fields a shape depends on that a variant (or --set)
    changed, when a shape problem is located in another file (typically the base's blocks)."""
    top = doc.locs[()].source if () in doc.locs else None  # the file given (a variant's root wins the merge)
    own = {top} | {at.source for at in doc.locs.values() if at.line is None}  # that file and the arguments
    changed = [
        f"{format_path(p)} is set at {doc.locs[p]}" for p in sorted(doc.locs, key=str)
        if p and p[0] in SHAPE_FIELDS and doc.locs[p].source != loc.source and doc.locs[p].source in own
        and (len(p) == 1 or doc.locs.get(p[:-1], loc).source == loc.source)
    ]
    return "; " + ", ".join(changed[:3]) if changed else ""


# --- extends ----------------------------------------------------------------------------------


def _with_bases(path: FsPath, chain: tuple[FsPath, ...]) -> Document:
    doc = load_document(path)
    _check_is_spec(doc, path)
    ref = doc.data.get("extends")
    if ref is None:
        return doc
    at = doc.locate(("extends",))
    base_path = _base_path(path, ref, at, (*chain, path.resolve()))
    try:
        base = _with_bases(base_path, (*chain, path.resolve()))
        spec_from_document(base)  # a base must be a valid spec on its own
    except _NotASpec as exc:
        raise SpecError.at(at, f"base spec '{ref}' is {exc.what}", ("extends",)) from None
    except SpecError as exc:
        n = len(exc.diagnostics)
        head = SpecError.at(at, f"base spec '{ref}' is invalid ({n} problem{'s' * (n > 1)} below)", ("extends",))
        raise SpecError(head.diagnostics + exc.diagnostics) from None
    return merge_documents(base, doc)


class _NotASpec(SpecError):
    """A file that parses as YAML but holds no spec field; `what` says so without quoting it."""

    what = ("not a spec: none of its top-level keys is a spec field (name, input, num_classes, blocks, extends, "
            "...); its contents are not shown")


def _check_is_spec(doc: Document, path: FsPath) -> None:
    """A mapping none of whose keys is a spec field is not a spec (/etc/shadow parses as one): it is
    refused without naming its keys or values, so no message shows what such a file holds."""
    if not any(isinstance(key, str) and key in Spec.model_fields for key in doc.data):
        raise _NotASpec.at(Loc(str(path), 1, 1), _NotASpec.what)


def _base_path(path: FsPath, ref: Any, at: Loc, chain: tuple[FsPath, ...]) -> FsPath:
    if not isinstance(ref, str) or not ref:
        raise SpecError.at(at, "must be a path to a base spec file or a shipped spec name", ("extends",))
    found = find_spec(ref, at=at, near=path.parent)
    info = _stat(found, at, ("extends",))
    base = _display_path(found.resolve())
    if base.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base))
        raise SpecError.at(at, f"extends cycle: {cycle}", ("extends",))
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise SpecError.at(at, f"base spec '{ref}' is a directory ({base}), not a spec file", ("extends",))
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
        match = _PATH_PART.fullmatch(part)
        if match is None:
            raise SpecError.at(at, f"bad field path '{text:.80}' (expected like blocks[0].out_channels)")
        indices = re.findall(r"\d+", match.group(2))
        if any(len(i) > 9 for i in indices):  # int() of thousands of digits would be slow, and no list is that long
            raise SpecError.at(at, f"index out of range in '{text:.80}'")
        segs += [match.group(1), *map(int, indices)]
    return tuple(segs)


def apply_override(doc: Document, arg: str, source: str | None = None) -> None:
    """Apply one `PATH=VALUE` override in place; its values are located at the argument.

    `source` names the argument in messages (default `--set PATH=VALUE`; a trainer flag such
    as `--epochs 0` passes its own spelling). Setting a `kind` to another kind replaces its
    mapping, as `extends` does: the old kind's fields do not apply to the new one.
    """
    at = Loc(source or f"--set {arg}")
    path_text, sep, value_text = arg.partition("=")
    if not sep:
        raise SpecError.at(at, "expected PATH=VALUE, like num_classes=100")
    path = parse_path(path_text.strip(), at)
    if path[0] == "extends":
        raise SpecError.at(at, "cannot be set here: a spec's bases are merged before --set applies; "
                               "write a spec file that extends the base instead", ("extends",))
    try:
        value = parse_scalar(value_text, at.source)
    except SpecError as exc:
        reason = exc.diagnostics[0].message.removeprefix("invalid YAML: ")
        raise SpecError.at(at, f"invalid YAML value '{value_text:.80}': {reason}") from None
    if path[-1] == "kind" and _other_kind(doc.data, path, value):
        path, value = path[:-1], {"kind": value}
    _set(doc.data, path, value, at)
    doc.locs = {p: loc for p, loc in doc.locs.items() if p[: len(path)] != path}
    doc.locs.update({(*path, *sub): at for sub in _paths(value)})
    for end in range(1, len(path) + 1):  # mappings the override created are located at it too
        doc.locs.setdefault(path[:end], at)
        if path[:end] not in doc.key_locs or end == len(path):
            doc.key_locs[path[:end]] = at


def _other_kind(data: Any, path: Path, value: Any) -> bool:
    """Whether `path` (ending in 'kind') exists in a mapping whose kind `value` changes."""
    try:
        for seg in path[:-1]:
            data = data[seg]
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(data, dict) and "kind" in data and data["kind"] != value


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
