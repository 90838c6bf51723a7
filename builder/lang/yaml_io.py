"""Reading YAML safely while remembering where every value came from. No torch here.

Only the safe constructors run (so `!!python/...` tags are refused), aliases are expanded
under a budget (so a "billion laughs" file stops early), and duplicate keys are errors.
Every limit (size, nesting, values, integer digits) is a located error, never a traceback:
see docs/reliability.md.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import Event
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import Reader, ReaderError
from yaml.resolver import Resolver

from builder.lang.errors import Document, Loc, Path, SpecError

MAX_BYTES = 4 * 2**20  # a spec is a few KB; refuse anything absurd before parsing it
MAX_VALUES = 100_000  # values after alias expansion; AlexNet has a few hundred
# Keys/indices from the top to a value. A spec needs 4 as written, but its resolved form (spec.yaml,
# `resolve`) nests two levels per composite block (`blocks`, index): 100 lets a spec nested 40 blocks
# deep load back; PyYAML overflows the stack near 200 when dumping.
MAX_DEPTH = 100
MAX_INT_DIGITS = 100  # digits of an integer literal; products of such values still print (Python: 4300 digits)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_INT_TAG = "tag:yaml.org,2002:int"
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer


class _DepthLimit(Composer):
    """A composer that refuses deep nesting (it recurses once per level; the root is level 0)."""

    peek_event: Callable[[], Event]  # the parser's, from the loader this is mixed into

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self.depth = getattr(self, "depth", 0) + 1
        if self.depth > MAX_DEPTH + 1:
            mark: Any = self.peek_event().start_mark  # PyYAML's Mark, or libyaml's of the same shape
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _PyLoader(_DepthLimit, yaml.SafeLoader):
    """SafeLoader (pure Python) that also reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`) and
    refuses deep nesting."""


_Loader: type[_PyLoader] | type[_CLoader] = _PyLoader
try:  # libyaml's parser makes a spec's events ten times faster; PyYAML's composer and constructors on top
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    pass
else:

    class _CLoader(_DepthLimit, CParser, SafeConstructor, Resolver):
        """_PyLoader's rules on libyaml's events: the same nodes, marks and errors, sooner."""

        def __init__(self, text: str) -> None:
            match = Reader.NON_PRINTABLE.search(text)  # the pure Reader's check, with its position
            if match:
                raise ReaderError("<text>", match.start(), ord(match.group()), "unicode",
                                  "special characters are not allowed")
            CParser.__init__(self, text)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

    _Loader = _CLoader


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes every string _Loader would read as another type (`name: "1e3"`)."""


_SCIENTIFIC = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
for _cls in (_PyLoader, _Loader, _Dumper):  # the same resolvers on both sides: what is dumped loads back equal
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _SCIENTIFIC, list("-+0123456789"))


def dump(data: Any, where: str) -> str:
    """`data` (plain values) as block-style YAML that this module reads back equal, or a SpecError at
    `where` when it nests deeper than MAX_DEPTH (it could be written but never read again)."""
    found = depth(data)
    if found > MAX_DEPTH:
        raise SpecError.at(Loc(where), f"nests {found} levels deep; at most {MAX_DEPTH} can be written as YAML "
                                       "and read back")
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100, allow_unicode=False)


def depth(data: Any) -> int:
    """Keys and indices from the top to the deepest value (0 for a scalar), as the reader counts them."""
    deepest, stack = 0, [(data, 0)]
    while stack:  # iterative: the data may be deeper than Python's recursion limit
        value, level = stack.pop()
        deepest = max(deepest, level)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def read_text(path: str | FsPath) -> str:
    """The file's text, or a one-line located error for every way reading it can fail.

    Only regular files are read (a FIFO, a device or `/dev/stdin` on a pipe could block or never
    end), and reading stops after MAX_BYTES bytes actually read, whatever `stat` says.
    """
    at = Loc(str(path), 1, 1)
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except FileNotFoundError:
        raise SpecError.at(at, "no such file") from None
    except OSError as exc:
        reason = {errno.ELOOP: "symlink loop", errno.ENAMETOOLONG: "file name too long"}.get(exc.errno or 0)
        raise SpecError.at(at, f"cannot read file: {reason or exc.strerror or exc}") from None
    except ValueError:  # a NUL in the path
        raise SpecError.at(at, "the path contains a NUL character") from None
    try:
        return _decode(_read_regular(fd, at), at)
    finally:
        os.close(fd)


def _read_regular(fd: int, at: Loc) -> bytes:
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise SpecError.at(at, "is a directory, not a spec file")
    if not stat.S_ISREG(mode):
        raise SpecError.at(at, "not a regular file (a pipe, device or socket); specs are read from files")
    chunks, size = [], 0
    try:
        while size <= MAX_BYTES and (chunk := os.read(fd, MAX_BYTES + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise SpecError.at(at, f"cannot read file: {exc.strerror or exc}") from None
    if size > MAX_BYTES:
        raise SpecError.at(at, f"file is larger than {MAX_BYTES // 2**20} MiB; not a spec")
    return b"".join(chunks)


def _decode(raw: bytes, at: Loc) -> str:
    if b"\0" in raw:
        raise SpecError.at(at, "binary file, not a YAML spec")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError.at(at, f"not UTF-8 text (bad byte at offset {exc.start})") from None


def parse(text: str, source: str) -> Document:
    """Parse one YAML document whose top level must be a mapping.

    libyaml's events are used when PyYAML has it. A text it refuses as YAML is parsed again by
    PyYAML's own parser, which says what is wrong as PyYAML always has (libyaml's messages leave
    out the character at fault) and locates it; the spec's own rules (tags, limits, duplicate
    keys) are checked once, by the same walker on either parser's nodes."""
    return _parse(_Loader, text, source)


def _parse(make: type[_PyLoader] | type[_CLoader], text: str, source: str) -> Document:
    try:
        loader = make(text)  # checks every character: control characters are refused here
    except ReaderError as exc:
        if make is not _PyLoader:
            return _parse(_PyLoader, text, source)
        raise SpecError.at(_text_loc(source, text, exc.position), _reader_message(exc)) from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError.at(Loc(source, 1, 1), "file is empty; expected a mapping of spec fields")
        if not isinstance(root, MappingNode):
            raise SpecError.at(_loc(source, root), "the top level must be a mapping of spec fields")
        return _Walker(loader, source).document(root)
    except yaml.YAMLError as exc:
        if make is not _PyLoader:  # libyaml refused it: PyYAML's parser words and locates why
            return _parse(_PyLoader, text, source)
        raise _yaml_error(exc, source) from None
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.YAMLError, source: str) -> SpecError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return SpecError.at(Loc(source, line, col), f"invalid YAML: {exc.problem or exc.context}")
    return SpecError.at(Loc(source, 1, 1), f"invalid YAML: {exc}")


def _text_loc(source: str, text: str, pos: int) -> Loc:
    line_start = text.rfind("\n", 0, pos) + 1
    return Loc(source, text.count("\n", 0, pos) + 1, pos - line_start + 1)


def _reader_message(exc: ReaderError) -> str:
    char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
    return f"invalid YAML: control character U+{char:04X} is not allowed (write it as an escape in a quoted string)"


def load_document(path: str | FsPath) -> Document:
    """Read and parse one YAML file, with positions."""
    return parse(read_text(path), str(path))


def parse_scalar(text: str, source: str) -> Any:
    """A `--set` value: any YAML flow value (`64`, `true`, `[512, 512]`, `{kind: none}`)."""
    return parse(f"v: {text}\n", source).data["v"] if text.strip() else ""


def _loc(source: str, node: Node) -> Loc:
    return Loc(source, node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    """Builds plain Python data from a composed node tree, recording each value's Loc."""

    def __init__(self, loader: _PyLoader | _CLoader, source: str) -> None:
        self.loader, self.source, self.count = loader, source, 0
        self.doc = Document(None)

    def document(self, root: MappingNode) -> Document:
        self.doc.data = self.value(root, ())
        return self.doc

    def value(self, node: Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            msg = f"more than {MAX_VALUES} values after expanding aliases (YAML alias bomb?)"
            raise SpecError.at(_loc(self.source, node), msg)
        if len(path) > MAX_DEPTH:  # an alias can nest a node inside itself
            raise SpecError.at(_loc(self.source, node), f"invalid YAML: nested more than {MAX_DEPTH} levels deep")
        self.doc.locs[path] = _loc(self.source, node)
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        if isinstance(node, SequenceNode):
            self._check_tag(node, _SEQ_TAG)
            return [self.value(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: Node) -> Any:
        """A scalar's value through SafeLoader's constructors, refusing bad explicit tags and huge ints."""
        if node.tag not in self.loader.yaml_constructors:  # only SafeLoader's plain types
            self._check_tag(node, "")
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        if node.tag == _INT_TAG and sum(c.isalnum() for c in node.value) > MAX_INT_DIGITS:
            msg = f"integer with more than {MAX_INT_DIGITS} digits; no spec field needs one"
            raise SpecError.at(_loc(self.source, node), msg)
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            raise SpecError.at(_loc(self.source, node), f"invalid {tag} value {node.value!r:.60}") from None

    def mapping(self, node: MappingNode, path: Path) -> dict[Any, Any]:
        self._check_tag(node, _MAP_TAG)
        own = sum(k.tag != "tag:yaml.org,2002:merge" for k, _ in node.value)
        self.loader.flatten_mapping(node)  # YAML merge keys (<<: *base), put before the own keys
        merged = len(node.value) - own
        out: dict[Any, Any] = {}
        for i, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, ScalarNode):
                raise SpecError.at(_loc(self.source, key_node), "mapping keys must be plain scalars")
            key = self.scalar(key_node)
            if key in out and i >= merged and _own_key(node.value[merged:i], key, self.loader):
                raise SpecError.at(_loc(self.source, key_node), f"duplicate key '{key}'", path)
            self.doc.key_locs[(*path, key)] = _loc(self.source, key_node)
            out[key] = self.value(value_node, (*path, key))
        return out

    def _check_tag(self, node: Node, expected: str) -> None:
        if node.tag != expected:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise SpecError.at(_loc(self.source, node), f"tag '{tag}' is not allowed: specs are plain YAML")


def _own_key(previous: list[tuple[Node, Node]], key: Any, loader: _PyLoader | _CLoader) -> bool:
    """Whether `key` was already written in this mapping (merged-in keys may be overridden)."""
    return any(isinstance(k, ScalarNode) and loader.construct_object(k) == key for k, _ in previous)
