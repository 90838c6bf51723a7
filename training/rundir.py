"""The run directory's life: choosing and creating it, holding its lock, writing the files that
describe the run, and reading back a resumed run's checkpoint. File names and the reading and
checking of every file: training/runfiles.py."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from builder.lang.files import write_text
from builder.lang.loading import dump_spec
from builder.lang.spec import Spec
from training.checkpoint import read_checkpoint
from training.config import TrainingConfig
from training.errors import CheckpointError, RunDirError, RunFileError
from training.runfiles import (
    BOARD_DIR,
    CHECKPOINT,
    LOCK,
    LOG,
    RECORD,
    RUN_FILES,
    RUN_INFO,
    SPEC_FILE,
    SUMMARY,
    TMP_FILE,
    check_resume,
    foreign_entries,
    read_run_info,
    spec_data,
)

__all__ = ["LOCK", "claim_run_dir", "locked", "remove_partial_files", "resume_target", "resumed_state", "spec_data",
           "write_run_files"]


def claim_run_dir(out: str | Path | None, name: str) -> tuple[Path, bool]:
    """The directory of a new run and whether it was created now. The default,
    runs/<name>-<YYYYmmdd-HHMMSS>[-N], is created on the spot, so two runs started in the same
    second get different names. An existing `out` must be empty or hold an unfinished run of
    this trainer without a checkpoint: nothing the trainer did not create is overwritten."""
    if out is None:
        base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 2
        while not _make(path):
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
        return path, True
    path = Path(out)
    if (path / CHECKPOINT).exists():
        raise RunDirError(f"{path} already holds a run; continue it with --resume {path}, or choose another --out")
    if path.is_dir():
        check_unstarted(path)
        return path, False
    if path.exists():
        raise RunDirError(f"--out {path} is a file, not a directory")
    return path, _make(path)


def check_unstarted(path: Path) -> None:
    """An existing --out may hold only what a start of this trainer (or a sweep) writes before its
    first checkpoint, and a run.json there must be this trainer's: nothing else is ever overwritten."""
    refused = f"--out {path} is not empty and holds no run of this trainer; its files are never overwritten: " \
              "choose another --out, or empty it"
    try:
        foreign = foreign_entries(path)
    except OSError as exc:
        raise RunDirError(f"cannot read --out {path}: {exc.strerror or exc}") from None
    if foreign:
        raise RunDirError(refused)
    if (path / RUN_INFO).exists():
        try:
            read_run_info(path)
        except RunFileError:
            raise RunDirError(refused) from None


def _make(path: Path) -> bool:
    """Create `path` (and its parents); False if it exists already."""
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise RunDirError(f"cannot create the output directory {path}: {exc.strerror or exc}") from None
    return True


@contextmanager
def locked(path: Path, created: bool = False) -> Iterator[None]:
    """Hold the run directory's lock while the run lives; a second run into it is refused. A start
    that fails or is interrupted before its first checkpoint removes what it wrote (and a directory
    created for it), so the same --out can be used again."""
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory")
    before = set(os.listdir(path))
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise RunDirError(f"cannot write into {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunDirError(f"{path} is in use by another run (it holds {path / LOCK}); wait for it to end, "
                          "or choose another --out") from None
    remove_partial_files(path)
    ok = False
    try:
        yield
        ok = True
    finally:
        if not ok and not (path / CHECKPOINT).exists():
            _remove_start(path, before, created)
        os.close(fd)


def _remove_start(path: Path, before: set[str], created: bool) -> None:
    """What a start that never checkpointed wrote: its own files (by name) that were not there before."""
    for name in set(os.listdir(path)) - before - {RECORD, LOG}:
        entry = path / name
        if name == BOARD_DIR and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        elif name in RUN_FILES and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
    if created and not any(path.iterdir()):
        path.rmdir()


def remove_partial_files(path: Path) -> None:
    """Temporary files of atomic writes that a killed run left behind (only ours, by name)."""
    for entry in path.iterdir():
        if TMP_FILE.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


def write_run_files(run_dir: Path, spec: Spec, config: TrainingConfig) -> None:
    """spec.yaml (the resolved spec with its full training section, rewritten on resume so it holds
    the epochs and settings last trained with) and summary.txt (torchinfo)."""
    from builder.model.summary import summarize

    write_text(run_dir / SPEC_FILE, resolved_spec(spec, config))
    write_text(run_dir / SUMMARY, f"{summarize(spec)}\n")


def resolved_spec(spec: Spec, config: TrainingConfig) -> str:
    """spec.yaml's text: the resolved spec with its full training section (a SpecError when it
    could not be read back)."""
    return dump_spec(spec.model_copy(update={"training": config.model_dump(mode="json")}))


# --- resume checks ----------------------------------------------------------------------------------


def resume_target(resume: str | Path, out: str | Path | None) -> Path:
    """The directory of the run to resume, once it is known to hold a checkpoint and match --out."""
    run_dir = Path(resume)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise RunDirError(f"--out {out} and --resume {run_dir} differ: a resumed run writes into its own directory")
    if not (run_dir / CHECKPOINT).exists():
        raise CheckpointError(f"no checkpoint at {run_dir / CHECKPOINT}")
    return run_dir


def resumed_state(spec: Spec, config: TrainingConfig, run_dir: Path, out: str | Path | None) -> dict[str, Any]:
    """The checkpoint of the run in `run_dir` (its structure checked), once it is known to fit
    this spec and recipe."""
    resume_target(run_dir, out)
    saved = read_checkpoint(run_dir)
    check_resume(saved, spec, config, run_dir)
    return saved
