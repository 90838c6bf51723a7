"""`python -m builder ...`: see builder.tools.cli."""

from __future__ import annotations

import gc

# The CLI's imports (the spec language, pydantic's schemas) all live until the process ends: the
# garbage collector has nothing to find among them, and its passes would cost a validate ~10 ms.
gc.disable()
try:
    from builder.tools.cli import run
finally:
    gc.enable()
run()
