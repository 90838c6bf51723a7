"""The one registry of block kinds: each kind is a `KindDef`, defined once. No torch.

A `KindDef` holds every part of a kind, all required: its pydantic model, its static inference,
its child lists (which drive expansion, module names, `diff`, width scaling and drawing), its
stride on a main path, its width rule, its fields for `diff`, its drawing frame, and its torch
factory named as "module:function" (resolved by builder.model.build, so this layer imports no torch).

The built-in kinds are the modules of builder.lang.kinds; an installed package adds its own
through the entry point group `cnn_builder.block_kinds` (each entry point names a KindDef, or a
list of them) or by calling `register_kind` before the first spec is validated. The `Block`
union of builder.lang.spec is made from the registry when pydantic first needs it; from then
on the registry is sealed. A spec only ever names a kind by its tag: YAML never imports anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from math import lcm
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from builder.lang.axes import Pair, pair
from builder.lang.base import Path
from builder.lang.errors import BuilderError

if TYPE_CHECKING:
    from builder.lang.walk import At, InferFn, Walk  # noqa: F401 (InferFn names infer's type)

ENTRY_POINT_GROUP = "cnn_builder.block_kinds"
MACRO_TAGS = ("repeat", "use")  # expanded away before inference (builder.lang.expand); not kinds
# Colour families of layer labels (builder.tools.draw has one colour per family).
FAMILIES = ("conv", "norm", "activation", "pool", "reshape", "linear", "dropout")


class RegistryError(BuilderError):
    """A kind is defined wrongly, twice, or too late. Exit status 2."""


class Label(str):
    """A layer label ("conv 64 k3 s1 p1") with its drawing colour family; compares as its text."""

    family: str

    def __new__(cls, text: str, family: str) -> Label:
        if family not in FAMILIES:
            raise RegistryError(f"label '{text}': unknown family '{family}' (one of {', '.join(FAMILIES)})")
        made = super().__new__(cls, text)
        made.family = family
        return made


@dataclass(frozen=True)
class ChildField:
    """A model field holding child blocks, and the module-name prefix of its blocks.

    many=False: the field is a list of blocks; prefix "" puts them directly under the block,
    "body." under `<name>.body`. many=True: a list of lists; `{k}` in prefix is the 1-based index
    ("branch{k}." names branch1, branch2, ...)."""

    field: str
    prefix: str
    many: bool


class ChildList(NamedTuple):
    """One list of child blocks: module-name prefix, data path below the block, the blocks."""

    prefix: str
    where: Path
    blocks: list[Any]


@dataclass(frozen=True)
class Frame:
    """How draw shows a kind: a box of layer pills (leaf), a dashed frame around one list
    (sequence), a frame with a skip lane into a merge node (residual: `skip` labels the lane,
    "" draws none), or lists side by side into a merge node (parallel). `merge` labels the node."""

    style: Literal["leaf", "sequence", "residual", "parallel"]
    merge: str = ""
    skip: str = ""


@dataclass(frozen=True)
class Scaling:
    """What a width rule needs: the multiplier, the spec's divisor, and the multiple that this
    block's channel counts must stay (lcm of the divisor, its own and the next block's multiple)."""

    width: float
    divisor: int
    multiple: int

    def channels(self, count: int) -> int:
        return round_channels(count, self.width, self.multiple)

    def blocks(self, blocks: list[Any]) -> list[Any]:
        """A child list scaled; its own blocks restart from the spec's divisor."""
        return scale_list(blocks, self.width, self.divisor)


@dataclass(frozen=True)
class KindDef:
    """Every part of one block kind. No field has a default: a kind cannot half-work."""

    tags: tuple[str, ...]
    """The `kind:` values it answers to (maxpool and avgpool share one model)."""
    model: type[BaseModel]
    """Its pydantic model: strict, a `kind` Literal of exactly `tags`, and an optional `name`."""
    infer: InferFn
    """(walk, block, at, in_shape) -> (out_shape or None when it collapsed, params, mult-adds, labels)."""
    children: tuple[ChildField, ...]
    """Its child lists; () for a leaf."""
    stride: Callable[[Any, Any], int | tuple[int, int]]
    """(spec, block) -> its stride on a main path, an int or (h, w) (a residual projection's stride is the product)."""
    width: Callable[[Any, Scaling], Any]
    """(block, scaling) -> the block with `width` folded into its channel counts."""
    channel_multiple: Callable[[Any], int]
    """(block) -> what its input and output channel counts must be a multiple of (a conv's groups)."""
    fields: Callable[[Any, Any], dict[str, Any]]
    """(spec, block) -> its fields as built (defaults applied, child lists left out), for `diff`."""
    frame: Callable[[Any, Any, Any], Frame]
    """(spec, block, block_shape) -> how draw shows it."""
    factory: str | Callable[..., Any]
    """"module:function" (or the function) of (ctx, block, block_shape) -> nn.Module."""

    def __post_init__(self) -> None:
        where = f"kind {'/'.join(self.tags) or '?'}"
        if not self.tags or not all(isinstance(t, str) and t for t in self.tags):
            raise RegistryError(f"{where}: tags must be non-empty strings")
        if not (isinstance(self.model, type) and issubclass(self.model, BaseModel)):
            raise RegistryError(f"{where}: model must be a pydantic model class")
        kind = self.model.model_fields.get("kind")
        if kind is None or set(get_args(kind.annotation)) != set(self.tags) or "name" not in self.model.model_fields:
            tags = ", ".join(map(repr, self.tags))
            raise RegistryError(f"{where}: the model needs `kind: Literal[{tags}]` and a `name` field")
        for child in self.children:
            if child.field not in self.model.model_fields:
                raise RegistryError(f"{where}: child list '{child.field}' is not a field of {self.model.__name__}")
        for part in ("infer", "stride", "width", "channel_multiple", "fields", "frame"):
            if not callable(getattr(self, part)):
                raise RegistryError(f"{where}: {part} must be callable")
        if not (callable(self.factory) or (isinstance(self.factory, str) and ":" in self.factory)):
            raise RegistryError(f"{where}: factory must be 'module:function' or a callable")


@dataclass
class _Registry:
    """The kinds by tag. Filled once (built-ins, entry points, register_kind), then sealed."""

    kinds: dict[str, KindDef] = field(default_factory=dict)
    builtin: tuple[KindDef, ...] = ()
    macros: dict[str, type[BaseModel]] = field(default_factory=dict)
    pending: list[KindDef] = field(default_factory=list)
    loaded: bool = False
    sealed: bool = False

    def add(self, kind: KindDef, source: str) -> None:
        if not isinstance(kind, KindDef):
            raise RegistryError(f"{source}: expected a KindDef, got {type(kind).__name__}")
        for tag in kind.tags:
            if tag in self.kinds or tag in MACRO_TAGS:
                raise RegistryError(f"{source}: kind '{tag}' is already defined")
            self.kinds[tag] = kind

    def load(self) -> dict[str, KindDef]:
        if not self.loaded:
            if not self.builtin:  # builder.lang.kinds provides them at its import (spec.py imports it)
                raise RegistryError("the built-in kinds are not loaded: import builder.lang.spec first")
            self.loaded = True
            for kind in (*self.builtin, *self.pending):
                self.add(kind, "builder")
            for name, kinds in _entry_points():
                for kind in kinds if isinstance(kinds, (list, tuple)) else [kinds]:
                    self.add(kind, f"entry point '{name}' of {ENTRY_POINT_GROUP}")
        return self.kinds


def _entry_points() -> Iterator[tuple[str, Any]]:
    """(name, loaded object) of each installed entry point of ENTRY_POINT_GROUP."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            yield point.name, point.load()
        except Exception as exc:  # an installed package's own bug: name it, do not trace back
            raise RegistryError(f"entry point '{point.name}' of {ENTRY_POINT_GROUP} ({point.value}) failed to "
                                f"load: {type(exc).__name__}: {exc}") from None


_REGISTRY = _Registry()  # the one registry (filled at first use, then sealed; see register_kind)


def provide_builtin(builtin: tuple[KindDef, ...], macros: dict[str, type[BaseModel]]) -> None:
    """Called once by builder.lang.kinds at its import: the built-in kinds (added at first use)
    and the macro models (repeat, use). The registry never imports them itself: they import it,
    so that would be an import cycle."""
    _REGISTRY.builtin, _REGISTRY.macros = builtin, macros


def register_kind(kind: KindDef) -> None:
    """Add a block kind. Call it before the first spec is validated (at the import of your
    package, or name the KindDef in the `cnn_builder.block_kinds` entry point group instead)."""
    if _REGISTRY.sealed:
        raise RegistryError(f"kind {'/'.join(kind.tags)}: register kinds before the first spec is validated "
                            f"(or through the {ENTRY_POINT_GROUP} entry point group)")
    if _REGISTRY.loaded:
        _REGISTRY.add(kind, "register_kind")
    else:
        KindDef.__post_init__(kind)
        _REGISTRY.pending.append(kind)


def kinds() -> dict[str, KindDef]:
    """Every registered kind by tag (loading the built-ins and entry points on first use)."""
    return _REGISTRY.load()


def kind_def(block: Any) -> KindDef:
    """The KindDef of a validated block (by its `kind` tag)."""
    return kinds()[block.kind]


# --- The union pydantic validates blocks with ----------------------------------------------


def block_tag(value: Any) -> str:
    """The union tag: `kind`, and conv when it is absent (AlexNet's format has no kind)."""
    if isinstance(value, dict):
        kind = value.get("kind", "conv")
        return kind if isinstance(kind, str) else repr(kind)
    return getattr(value, "kind", "conv")


class BlockUnion:
    """Annotated metadata: a block is one of the registered kinds (or a macro), chosen by its tag.

    The choices are read from the registry when pydantic builds a schema that holds blocks,
    which seals the registry."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        choices = {tag: handler.generate_schema(model) for tag, model in members().items()}
        return core_schema.tagged_union_schema(choices, discriminator=block_tag)

    def member_for(self, data: Any) -> Any:
        """The model that validates `data` (for "did you mean" suggestions); None if no kind fits."""
        return members().get(block_tag(data))


def members() -> dict[str, type[BaseModel]]:
    """The union's models by tag: every registered kind, then the macros. Seals the registry."""
    _REGISTRY.sealed = True
    return {**{tag: kind.model for tag, kind in kinds().items()}, **_REGISTRY.macros}


Block = Annotated[Any, BlockUnion()]
"""A block of any registered kind: the type of every list of blocks in a model."""


# --- What the child lists derive -------------------------------------------------------------


def child_lists(block: Any) -> list[ChildList]:
    """The block lists inside a block, from its kind's ChildFields (a sequence's blocks, a
    residual's body, a parallel block's branches). The one naming rule every tool follows."""
    out: list[ChildList] = []
    for child in kind_def(block).children:
        value = getattr(block, child.field)
        if child.many:
            out += [ChildList(child.prefix.format(k=k + 1), (child.field, k), b) for k, b in enumerate(value)]
        else:
            out.append(ChildList(child.prefix, (child.field,), value))
    return out


def with_child_lists(block: Any, lists: list[list[Any]]) -> Any:
    """The block with its child lists replaced, in child_lists order."""
    update: dict[str, Any] = {}
    items = iter(lists)
    for child in kind_def(block).children:
        value = getattr(block, child.field)
        update[child.field] = [next(items) for _ in value] if child.many else next(items)
    return block.model_copy(update=update)


def default_name(block: Any, index: int) -> str:
    """A block's module name: its own `name`, else block<i> (1-based position in its list)."""
    return block.name if getattr(block, "name", None) else f"block{index + 1}"


def child_path(parent: str, prefix: str, name: str) -> str:
    """Module path of a child: `stage1` + `body.` + `conv1` -> `stage1.body.conv1`."""
    return f"{parent}.{prefix}{name}" if parent else f"{prefix}{name}"


def walk_blocks(blocks: list[Any], parent: str = "", prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(module path under features, block) of every block at every depth, a composite first."""
    for i, block in enumerate(blocks):
        name = child_path(parent, prefix, default_name(block, i))
        yield name, block
        for sub, _, children in child_lists(block):
            yield from walk_blocks(children, name, sub)


# --- Width scaling -----------------------------------------------------------------------------


def round_channels(channels: int, width: float, multiple: int) -> int:
    """channels * width rounded half up to a multiple of `multiple`, and never below it."""
    return max(multiple, int(channels * width / multiple + 0.5) * multiple)


def scale_list(blocks: list[Any], width: float, divisor: int) -> list[Any]:
    """Each block scaled by its kind's width rule; a block's channels stay a multiple of its own
    and the next block's channel_multiple (which must divide its input)."""
    own = [kind_def(b).channel_multiple(b) for b in blocks]
    nexts = [*own[1:], 1]
    return [kind_def(b).width(b, Scaling(width, divisor, lcm(divisor, o, n))) for b, o, n in zip(blocks, own, nexts)]


# --- Parts that many kinds share -------------------------------------------------------------


def unit_stride(spec: Any, block: Any) -> int:
    return 1


def first_list_stride(spec: Any, block: Any) -> int | tuple[int, int]:
    """A composite's stride: that of its first child list (the main path)."""
    lists = child_lists(block)
    return body_stride(spec, lists[0].blocks) if lists else 1


def body_stride(spec: Any, blocks: list[Any]) -> int | Pair:
    """The product of every stride on a main path (each kind says its own, an int or (h, w)): a
    projection's stride. An int when both axes agree, else (h, w)."""
    h = w = 1
    for block in blocks:
        sh, sw = pair(kind_def(block).stride(spec, block))
        h, w = h * sh, w * sw
    return h if h == w else (h, w)


def same_width(block: Any, scaling: Scaling) -> Any:
    """The width rule of a kind without channel counts of its own."""
    return block


def scale_children(block: Any, scaling: Scaling) -> Any:
    """The width rule of a composite: every child list scaled."""
    return with_child_lists(block, [scaling.blocks(c.blocks) for c in child_lists(block)])


def no_multiple(block: Any) -> int:
    return 1


def plain_fields(spec: Any, block: Any) -> dict[str, Any]:
    """A block's own fields as `diff` shows them (nested mappings flattened, child lists left out)."""
    exclude = {c.field for c in kind_def(block).children} | {"name"}
    return _flatten(block.model_dump(exclude=exclude))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def leaf_frame(spec: Any, block: Any, shape: Any) -> Frame:
    return Frame("leaf")


def resolve_factory(kind: KindDef) -> Callable[..., Any]:
    """The kind's factory function (importing its module: builder.model for the built-ins)."""
    if callable(kind.factory):
        return kind.factory
    module, _, name = kind.factory.partition(":")
    try:
        found = getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"kind {'/'.join(kind.tags)}: factory '{kind.factory}' not found: {exc}") from None
    if not callable(found):
        raise RegistryError(f"kind {'/'.join(kind.tags)}: factory '{kind.factory}' is not callable")
    return found
