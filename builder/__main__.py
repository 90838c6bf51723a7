"""`python -m builder ...`: see builder.cli."""

from __future__ import annotations

import sys

from builder.cli import main

sys.exit(main())
