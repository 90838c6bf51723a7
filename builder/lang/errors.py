"""Located, human-readable spec errors: `FILE:LINE:COL: error: FIELD.PATH: message`.

Problems are found against a data path (('blocks', 2, 'kernel_size')); a `Document` knows
where each path came from (a file position, or a `--set` argument), so every problem can be
reported where the person has to fix it. No torch here.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

PathSeg = str | int
Path = tuple[PathSeg, ...]


@dataclass(frozen=True)
class Loc:
    """Where a value came from: a file position (1-based) or a whole argument like `--set x=1`."""

    source: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        return self.source if self.line is None else f"{self.source}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """Something wrong at a data path. `at_key` points at the key rather than its value."""

    path: Path
    message: str
    at_key: bool = False


@dataclass(frozen=True)
class Diagnostic:
    loc: Loc
    path: Path
    message: str

    def __str__(self) -> str:
        where = f"{format_path(self.path)}: " if self.path else ""
        return printable(f"{self.loc}: error: {where}{self.message}")


def printable(text: str) -> str:
    """Non-printable characters escaped (`\\x07`, `\\n`), so one problem is always one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class BuilderError(Exception):
    """A failure to report as plain lines (never a traceback), exiting with `exit_code`."""

    exit_code = 2

    def lines(self) -> list[str]:
        return [f"error: {self}"]


class SpecError(BuilderError):
    """One or more located problems in a spec, a config or an argument. Exit status 2."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    def lines(self) -> list[str]:
        return [str(d) for d in self.diagnostics]

    @classmethod
    def at(cls, loc: Loc, message: str, path: Path = ()) -> SpecError:
        return cls([Diagnostic(loc, path, message)])


@dataclass
class Document:
    """Plain YAML data plus the location of every value (and of every mapping key)."""

    data: Any
    locs: dict[Path, Loc] = field(default_factory=dict)
    key_locs: dict[Path, Loc] = field(default_factory=dict)

    def locate(self, path: Path, at_key: bool = False) -> Loc:
        """The location of `path`, or of its nearest ancestor that has one."""
        if at_key and path in self.key_locs:
            return self.key_locs[path]
        for end in range(len(path), -1, -1):
            if path[:end] in self.locs:
                return self.locs[path[:end]]
        return Loc("<unknown>")

    def diagnose(self, problems: Iterable[Problem]) -> SpecError:
        """All problems as one error, in file order."""
        found = [Diagnostic(self.locate(p.path, p.at_key), p.path, p.message) for p in problems]
        return SpecError(sorted(found, key=lambda d: (d.loc.source, d.loc.line or 0, d.loc.col or 0)))


def format_path(path: Path) -> str:
    """('blocks', 2, 'kernel_size') -> 'blocks[2].kernel_size'."""
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def suggest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' when a close choice exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# --- pydantic errors -> problems ----------------------------------------------------------


def validate(model: type[BaseModel], doc: Document, prefix: Path = ()) -> Any:
    """Validate doc.data (found at `prefix` of the document) or raise every problem at once."""
    data = doc.data
    for seg in prefix:
        data = data[seg]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _one_per_union_value([(_problem(model, data, err), err) for err in exc.errors()])
        raise doc.diagnose(Problem((*prefix, *p.path), p.message, p.at_key) for p in problems) from None


def _one_per_union_value(found: list[tuple[Problem, Any]]) -> list[Problem]:
    """One problem per value that no member of a union of a number and words accepts (`groups: 0`,
    `stochastic_depth: 1.5`): the words' error for a string (with its "did you mean"), else the number's."""
    by_path: dict[Path, list[tuple[Problem, Any]]] = {}
    for problem, err in found:
        by_path.setdefault(problem.path, []).append((problem, err))
    out: list[Problem] = []
    for path, group in by_path.items():
        words = [p for p, e in group if e["type"] == "literal_error"]
        others = [p for p, e in group if e["type"] != "literal_error"]
        if not (words and others and len(group[0][1]["loc"]) > len(path)):
            out += [p for p, _ in group]
        else:
            out.append((words if isinstance(group[0][1].get("input"), str) else others)[0])
    return out


def _problem(model: type[BaseModel], data: Any, err: Mapping[str, Any]) -> Problem:
    ctx = err.get("ctx") or {}
    if err["type"] == "spec_rule":  # a model validator's error, pinned to one of its fields
        return Problem(_data_path(data, (*err["loc"], ctx["field"])), err["msg"])
    path = _data_path(data, err["loc"])
    if err["type"] == "union_tag_invalid" and _has(_value_at(data, path), "kind"):
        return Problem((*path, "kind"), _message(err))  # point at the bad kind itself
    if err["type"] == "extra_forbidden":
        known = _fields_at(model, data, path[:-1])
        return Problem(path, f"unknown field '{path[-1]}'" + suggest(str(path[-1]), known), at_key=True)
    return Problem(path, _message(err))


def _data_path(data: Any, loc: Sequence[PathSeg]) -> Path:
    """Drop pydantic's union-tag segments ('lrn', 'function-after[...]') from an error loc."""
    path: list[PathSeg] = []
    for i, seg in enumerate(loc):
        if i < len(loc) - 1 and isinstance(data, dict) and data.get("kind") == seg:
            continue  # the tag of the block's kind, even where a field has its name (a gate's `gate`)
        if _has(data, seg):
            data = data[seg]
        elif i < len(loc) - 1 or not isinstance(data, (dict, list)):
            continue  # a tag of a union member (below a scalar: the member that refused it), not a place
        path.append(seg)
    return tuple(path)


def _value_at(data: Any, path: Path) -> Any:
    for seg in path:
        data = data[seg] if _has(data, seg) else None
    return data


def _has(data: Any, seg: PathSeg) -> bool:
    if isinstance(data, dict):
        return seg in data
    return isinstance(data, list) and isinstance(seg, int) and -len(data) <= seg < len(data)


_TEMPLATES = {
    "missing": "required field is missing",
    "int_type": "must be an integer, got {input!r}",
    "float_type": "must be a number, got {input!r}",
    "bool_type": "must be true or false, got {input!r}",
    "string_type": "must be a string, got {input!r}",
    "list_type": "must be a list, got {input!r}",
    "dict_type": "must be a mapping, got {input!r}",
    "model_type": "must be a mapping, got {input!r}",
    "model_attributes_type": "must be a mapping, got {input!r}",
    "greater_than": "must be > {gt}, got {input!r}",
    "greater_than_equal": "must be >= {ge}, got {input!r}",
    "less_than": "must be < {lt}, got {input!r}",
    "less_than_equal": "must be <= {le}, got {input!r}",
    "too_short": "must have at least {min_length} items",
    "too_long": "must have at most {max_length} items",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must match {pattern}, got {input!r}",
    "union_tag_not_found": "needs a 'kind' key",
}


def _message(err: Mapping[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"must be one of {', '.join(choices)}; got {_YamlValue(value)!r}" + suggest(str(value), choices)
    if kind == "union_tag_invalid":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag")
        return f"unknown kind '{tag}'; expected one of {', '.join(choices)}" + suggest(str(tag), choices)
    if kind in _TEMPLATES:
        return _TEMPLATES[kind].format(input=_YamlValue(value), **ctx)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


class _YamlValue:
    """Shows a value as it was written in YAML: true, null, 3.5, 'text'."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        v = self.value
        if isinstance(v, bool) or v is None:
            return {True: "true", False: "false", None: "null"}[v]
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."


def _fields_at(model: type[BaseModel], data: Any, path: Path) -> list[str]:
    """Field names of the model that validates the mapping at `path` (for suggestions)."""
    tp: Any = model
    for seg in path:
        tp = _unwrap(tp, data)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(seg, str):
            tp = tp.model_fields[seg].annotation if seg in tp.model_fields else None
        elif get_origin(tp) is list and isinstance(seg, int):
            tp = get_args(tp)[0]
        else:
            return []
        data = data[seg] if _has(data, seg) else None
    tp = _unwrap(tp, data)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    return [info.alias or name for name, info in tp.model_fields.items()]  # as a spec spells them


def _unwrap(tp: Any, data: Any) -> Any:
    """Strip Annotated and pick the union member that `data` (by its 'kind' tag) is meant for."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            chooser = next((m for m in tp.__metadata__ if hasattr(m, "member_for")), None)
            tp = get_args(tp)[0] if chooser is None else chooser.member_for(data)  # a registry union
        elif origin in (Union, types.UnionType):
            members = [m for m in get_args(tp) if m is not type(None)]
            tp = next((m for m in members if _tag_matches(m, data)), members[0])
        else:
            return tp


def _tag_matches(member: Any, data: Any) -> bool:
    if not (isinstance(member, type) and issubclass(member, BaseModel) and isinstance(data, dict)):
        return False
    kind = member.model_fields.get("kind")
    if kind is None or get_origin(kind.annotation) is not Literal:
        return False
    return data.get("kind") in get_args(kind.annotation)
