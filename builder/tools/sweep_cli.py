"""The `sweep` and `leaderboard` commands' arguments, apart from their work: every command's
start builds the whole argument parser, and the sweep, search and leaderboard modules (their
pydantic models, the run-file readers) load only when one of them runs."""

from __future__ import annotations

import argparse
from typing import Any

from training.flags import MAX_COUNT, MAX_VARIANTS, Flag, add_run_flags, bounded_int


def cmd_sweep(args: argparse.Namespace) -> int:
    from builder.tools.sweep import cmd_sweep as run

    return run(args)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from builder.tools.leaderboard import cmd_leaderboard as run

    return run(args)


def add_sweep_parser(sub: Any) -> None:
    """Register `sweep` on the builder CLI's subparsers."""
    p = sub.add_parser(
        "sweep", help="train variants of specs (a grid, override sets, seeds, or an Optuna search)",
        description="Train every variant as its own run directory under --out, then write the leaderboard. "
        "Re-running the same command skips finished variants and resumes interrupted ones.",
    )
    p.add_argument("paths", nargs="+", metavar="SPEC", help="base spec(s), or one sweep file (see docs/sweeps.md)")
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a field path (spec or training.*) and its values; several --grid multiply")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="an override every variant gets")
    Flag("--seeds", "seeds", "N", "train each variant with N seeds (averaged)", check=bounded_int(1, MAX_COUNT)).add(p)
    Flag("--jobs", "jobs", "J", "run J variants at once, the CPU threads divided",
         check=bounded_int(1, MAX_COUNT)).add(p)
    p.add_argument("--out", metavar="DIR", help="the sweep directory (default sweeps/<name>)")
    add_run_flags(p, " of every variant")
    p.add_argument("--storage", metavar="URL", help="search: the Optuna storage (default sqlite in the sweep dir)")
    Flag("--trials", "trials", "N", "search: the trial budget over all workers",
         check=bounded_int(1, MAX_VARIANTS)).add(p)
    p.set_defaults(func=cmd_sweep)


def add_leaderboard_parser(sub: Any) -> None:
    """Register `leaderboard` on the builder CLI's subparsers."""
    p = sub.add_parser("leaderboard", help="rank the variants of a sweep directory; csv, markdown and a Pareto plot")
    p.add_argument("dir", metavar="DIR", help="a sweep directory (one run directory per variant)")
    p.add_argument("--sort", default="best_val_acc", choices=["best_val_acc", "test_acc", "params", "mult_adds",
                                                              "seconds"], help="the ranking (default best_val_acc)")
    p.add_argument("--x", default="mult_adds", choices=["mult_adds", "params"], help="the Pareto plot's cost axis")
    p.set_defaults(func=cmd_leaderboard)
