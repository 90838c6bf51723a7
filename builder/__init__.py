"""Config-driven CNN builder: YAML spec -> validated Spec -> nn.Module -> torchinfo summary.

`load_spec` needs no torch; `build_model` and `summarize` import it on first use, so
`python -m builder validate` stays instant. All three check their arguments and raise the
project's own errors (a `SpecError` with one located line), never an AttributeError from deep inside.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from builder.lang.errors import BuilderError, SpecError
    from builder.lang.loading import load_spec
    from builder.lang.registry import KindDef, register_kind
    from builder.lang.shapes import infer
    from builder.lang.spec import Spec
    from builder.model.summary import Summary

__all__ = [
    "BuilderError", "KindDef", "Spec", "SpecError", "build_model", "infer", "load_spec", "register_kind", "summarize",
]
# Each name's module, imported on first use: `python -m builder` can then import its CLI with the
# garbage collector paused (builder.__main__), and `import builder.lang.x` pays for x alone.
_LAZY = {  # (Loc is not public, but `import builder` used to provide it)
    "BuilderError": "builder.lang.errors", "SpecError": "builder.lang.errors", "Loc": "builder.lang.errors",
    "load_spec": "builder.lang.loading", "KindDef": "builder.lang.registry", "register_kind": "builder.lang.registry",
    "infer": "builder.lang.shapes", "Spec": "builder.lang.spec",
}


if not TYPE_CHECKING:  # for mypy, the imports above: a misspelt name stays an error

    def __getattr__(name: str) -> Any:
        from importlib import import_module

        if name in _LAZY:
            return getattr(import_module(_LAZY[name]), name)
        if name in ("lang", "model", "tools"):  # the subpackages, as `import builder` made them before
            return import_module(f"builder.{name}")
        raise AttributeError(f"module 'builder' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def build_model(spec: Spec, *, check_memory: bool = True) -> nn.Sequential:
    """The nn.Module of a validated spec (float32, on torch's default device); see builder.model.build."""
    from builder.lang.spec import Spec
    from builder.model.build import build_model as build  # torch, on first use only

    _check("build_model", "spec", spec, Spec, "a Spec (from load_spec)")
    _check("build_model", "check_memory", check_memory, bool, "true or false")
    return build(spec, check_memory=check_memory)


def summarize(spec: Spec, *, device: str = "auto", batch_size: int = 1, depth: int = 3) -> Summary:
    """torchinfo's table of the built spec, checked against the static shapes; see builder.model.summary."""
    from builder.lang.spec import Spec
    from builder.model.summary import summarize as run  # torch, on first use only

    _check("summarize", "spec", spec, Spec, "a Spec (from load_spec)")
    _check("summarize", "device", device, str, "a device name such as 'auto', 'meta' or 'cpu'")
    for name, value, least in (("batch_size", batch_size, 1), ("depth", depth, 0)):
        _check("summarize", name, value, int, f"an integer >= {least}")
        if value < least:
            from builder.lang.errors import Loc, SpecError

            raise SpecError.at(Loc("summarize"), f"must be an integer >= {least}, got {value}", (name,))
    return run(spec, device=device, batch_size=batch_size, depth=depth)


def _check(func: str, name: str, value: Any, kind: type, what: str) -> None:
    """A SpecError naming the function and argument unless `value` is a `kind` (bools are not ints)."""
    from builder.lang.errors import Loc, SpecError
    from builder.lang.spec import Spec

    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return
    got = f"the path {os.fspath(value)!r:.80}; load it first: load_spec(...)" if isinstance(
        value, (str, os.PathLike)) and kind is Spec else f"{type(value).__name__} {value!r:.60}"
    raise SpecError.at(Loc(func), f"must be {what}, got {got}", (name,))
