"""`python -m builder sweep`: train every variant of a grid (or an Optuna search) as ordinary runs.

A sweep is SPEC(s) x grid values x override sets x seeds. Every variant is validated (spec,
`--set` overrides and training config, exactly as `train` does) before the first one starts;
then each runs as its own `python -m builder train ... --out SWEEP/NAME` subprocess, so a
crash or a diverging run is recorded as failed (with its last output line) and the sweep goes
on. Re-running the same command skips finished variants and resumes interrupted ones with
`train --resume`. Torch is not imported here (the children import it).
"""

from __future__ import annotations

import argparse

from builder.lang.errors import Diagnostic, Loc, SpecError
from builder.tools.sweep_plan import plan_from_args
from builder.tools.sweep_run import run_grid


def cmd_sweep(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    if (args.storage is not None or args.trials is not None) and plan.search is None:
        flag = "--storage" if args.storage is not None else "--trials"
        raise SpecError.at(Loc(flag), "needs a sweep file with a search: section")
    if plan.search is not None:
        _check_search_flags(args)
        from builder.tools.search import run_search

        return run_search(plan, plan.search, storage=args.storage, trials=args.trials, log=_print)
    return run_grid(plan, _print)


def _check_search_flags(args: argparse.Namespace) -> None:
    """Grid flags mean nothing to a search: say so instead of ignoring them."""
    wrong = [("--grid", bool(args.grid), "a search samples its own variants"),
             ("--seeds", (args.seeds or 1) > 1, "a search trains each trial once"),
             ("--jobs", (args.jobs or 1) > 1, "a worker trains one trial at a time; start several workers")]
    found = [Diagnostic(Loc(flag), (), why) for flag, bad, why in wrong if bad]
    if found:
        raise SpecError(found)


def _print(line: str) -> None:
    print(line, flush=True)


