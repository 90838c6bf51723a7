"""The rule for a file the user names as an output (`predict -o`, `port-weights -o`, `bench
--json`, `draw -o`, `export -o`): nothing the program did not create is replaced unless the user
says `--force`, and some things never are.

Never: a device node, a directory, or one of a run's own files (training.runfiles). Only with
--force: an existing file, a symbolic link (the link itself is replaced; its target is never
written), another non-regular file (a FIFO...), or a new file inside a run directory. The write
itself is atomic (builder.lang.files), so what is checked here is what gets replaced. Torch-free.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from builder.lang.errors import BuilderError

FORCE_HELP = "replace an existing file or link, or write inside a run directory (never a device or a run's own file)"


class OutputRefused(BuilderError):
    """An output path the rule refuses: one line, exit 2, nothing written."""


def add_force_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)


def check_output(path: str | Path, *, flag: str, force: bool, chosen: bool = False, parents: bool = False) -> Path:
    """`path` once the rule allows writing it (OutputRefused otherwise). `chosen`: the program
    chose the path itself (a default inside the run it reads), so being in a run is no reason;
    `parents`: the command creates missing parent directories."""
    path = Path(path)
    _check_target(path, _checked_parent(path, flag, parents), flag, force, chosen)
    return path


def check_outputs(paths: Iterable[Path], *, flag: str, force: bool, parents: bool = False) -> None:
    """check_output of each path, each directory checked once (predict writes 2,000 files into one)."""
    folders: dict[Path, tuple[Path, Path | None]] = {}
    for path in paths:
        if path.parent not in folders:
            folders[path.parent] = _checked_parent(path, flag, parents)
        _check_target(path, folders[path.parent], flag, force, chosen=False)


def _checked_parent(path: Path, flag: str, parents: bool) -> tuple[Path, Path | None]:
    """(the resolved parent of `path`, the run directory enclosing it or None), once the parent
    may hold a new file."""
    from training.runfiles import enclosing_run  # its pydantic models: not at every command's start

    where = f"{flag} {path}" if flag else str(path)
    if os.path.lexists(path.parent) and not path.parent.is_dir():
        raise OutputRefused(f"{where}: {path.parent} is not a directory")
    if not parents and not path.parent.is_dir():
        raise OutputRefused(f"{where}: no such directory {path.parent}")
    folder = path.parent.resolve()
    return folder, enclosing_run(folder)


def _check_target(path: Path, parent: tuple[Path, Path | None], flag: str, force: bool, chosen: bool) -> None:
    from training.runfiles import RUN_FILES

    where = f"{flag} {path}" if flag else str(path)
    folder, run = parent
    if run is not None and (folder / path.name).relative_to(run).parts[0] in RUN_FILES:
        raise OutputRefused(f"{where}: a file of the run in {run}; a run's own files are never replaced")
    found = _existing(path)
    if found is None and run is not None and not chosen:
        found = f"inside the run directory {run}", "write there"
    if found is None:
        return
    why, allowed = found
    if allowed is None:
        raise OutputRefused(f"{where}: {why}; never written")
    if not force:
        raise OutputRefused(f"{where}: {why}; pass --force to {allowed}")


def _existing(path: Path) -> tuple[str, str | None] | None:
    """What is at `path` and what --force would allow (None: never), or None if nothing is."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})", None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device", None
    if stat.S_ISDIR(mode):
        return "a directory", None
    if stat.S_ISLNK(mode):
        return "a symbolic link (its target is never written)", "replace the link"
    if not stat.S_ISREG(mode):
        return "not a regular file", "replace it"
    return "exists", "replace it"
