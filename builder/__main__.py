"""`python -m builder ...`: see builder.tools.cli."""

from __future__ import annotations

import sys

from builder.tools.cli import main

sys.exit(main())
