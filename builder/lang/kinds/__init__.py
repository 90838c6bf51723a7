"""The built-in block kinds, one module each; every module defines `KIND`, a registry.KindDef.

Adding a kind: a module here with its model and KindDef, its name in BUILTIN below, its torch
factory in builder.model.factories, and its tests (docs/adding-a-block-kind.md).
"""

from __future__ import annotations

from builder.lang.kinds import (
    activation,
    adaptive_avgpool,
    batchnorm,
    channel_shuffle,
    conv,
    conv_transpose,
    dropout,
    gate,
    groupnorm,
    layernorm,
    parallel,
    pool,
    residual,
    sequence,
    skip,
    upsample,
)
from builder.lang.macros import MACROS
from builder.lang.registry import KindDef, provide_builtin

BUILTIN: tuple[KindDef, ...] = tuple(m.KIND for m in (
    conv, sequence, residual, parallel, pool, adaptive_avgpool, batchnorm, activation, dropout,
    gate, layernorm, groupnorm, channel_shuffle, conv_transpose, upsample, skip,
))
provide_builtin(BUILTIN, MACROS)
