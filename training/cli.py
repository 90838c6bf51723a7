"""`python -m builder train SPEC`: argument parsing only; torch is imported when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def add_train_parser(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the `train` subcommand on the builder CLI's subparsers."""
    p = sub.add_parser("train", help="train a spec on real data")
    add_spec_args(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    raise NotImplementedError("the trainer is not written yet")
