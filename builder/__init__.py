"""Config-driven CNN builder: YAML spec -> validated Spec -> nn.Module -> torchinfo summary.

`load_spec` needs no torch; `build_model` and `summarize` import it on first use, so
`python -m builder validate` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from builder.lang.errors import BuilderError, SpecError
from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.lang.spec import Spec

if TYPE_CHECKING:
    from builder.model.build import build_model
    from builder.model.summary import summarize

__all__ = ["BuilderError", "Spec", "SpecError", "build_model", "infer", "load_spec", "summarize"]


def __getattr__(name: str) -> Any:
    # Lazy: importing torch costs about a second, and validation must not pay it.
    if name == "build_model":
        from builder.model.build import build_model

        return build_model
    if name == "summarize":
        from builder.model.summary import summarize

        return summarize
    raise AttributeError(f"module 'builder' has no attribute {name!r}")
