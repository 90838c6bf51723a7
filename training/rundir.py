"""The run directory: choosing and creating it, the files that describe the run, and the checks
that a resumed run is the same run (spec and recipe) as the one in its checkpoint."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from builder.lang.errors import Problem
from builder.lang.files import TMP_NAME, write_text
from builder.lang.loading import dump_spec
from builder.lang.spec import Spec
from training.checkpoint import CHECKPOINT, load_checkpoint
from training.config import RESUMABLE_CHANGES, TrainingConfig
from training.errors import CheckpointError, ConfigProblems, RunDirError
from training.runfiles import LOCK, LOG, RECORD, RUN_INFO, SPEC_FILE, SUMMARY_FILE

STATE_KEYS = frozenset({"spec", "config", "position", "model", "optimizer", "scheduler", "scaler", "rng"})


# What this program itself may have put in a run directory before the run starts: the lock, and
# the record and log that `builder sweep` keeps beside each variant's run (builder/tools/sweep_record.py).
OURS = frozenset({LOCK, RECORD, LOG})


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
        if any(e.name not in OURS for e in path.iterdir()) and not (path / RUN_INFO).is_file():
            raise RunDirError(f"--out {path} is not empty and holds no run of this trainer; its files are never "
                              "overwritten: choose another --out, or empty it")
        return path, False
    if path.exists():
        raise RunDirError(f"--out {path} is a file, not a directory")
    return path, _make(path)


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
    """Hold the run directory's lock while the run lives; a second run into it is refused. On a
    failure before anything was written, a directory created for this run is removed again."""
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory")
    had_lock = (path / LOCK).exists()
    try:
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
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
        if not ok and not had_lock and [e.name for e in path.iterdir()] == [LOCK]:  # nothing else was written
            (path / LOCK).unlink()
            if created:
                path.rmdir()
        os.close(fd)


def remove_partial_files(path: Path) -> None:
    """Temporary files of atomic writes that a killed run left behind (only ours, by name)."""
    for entry in path.iterdir():
        if TMP_NAME.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)


def spec_data(spec: Spec) -> dict[str, Any]:
    """The model part of a spec (what the weights depend on), as plain data."""
    return spec.model_dump(mode="json", exclude={"training", "extends"})


def write_run_files(run_dir: Path, spec: Spec, config: TrainingConfig) -> None:
    """spec.yaml (the resolved spec with its full training section, rewritten on resume so it holds
    the epochs and settings last trained with) and summary.txt (torchinfo)."""
    from builder.model.summary import summarize

    resolved = spec.model_copy(update={"training": config.model_dump(mode="json")})
    write_text(run_dir / SPEC_FILE, dump_spec(resolved))
    write_text(run_dir / SUMMARY_FILE, f"{summarize(spec)}\n")


# --- resume checks ----------------------------------------------------------------------------------


def resume_target(resume: str | Path, out: str | Path | None) -> Path:
    """The directory of the run to resume, once it is known to hold a checkpoint and match --out."""
    run_dir = Path(resume)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise RunDirError(f"--out {out} and --resume {run_dir} differ: a resumed run writes into its own directory")
    if not (run_dir / CHECKPOINT).is_file():
        raise CheckpointError(f"no checkpoint at {run_dir / CHECKPOINT}")
    return run_dir


def resumed_state(spec: Spec, config: TrainingConfig, run_dir: Path, out: str | Path | None) -> dict[str, Any]:
    """The checkpoint of the run in `run_dir`, once it is known to fit this spec and recipe."""
    resume_target(run_dir, out)
    saved = load_checkpoint(run_dir / CHECKPOINT)
    missing = sorted(STATE_KEYS - saved.keys())
    if missing:
        raise CheckpointError(f"{run_dir / CHECKPOINT} lacks {', '.join(missing)}: not a complete checkpoint")
    check_resume(saved, spec, config, run_dir)
    return saved


def check_resume(saved: dict[str, Any], spec: Spec, config: TrainingConfig, run_dir: Path) -> None:
    """The spec and the recipe must be the run's (only RESUMABLE_CHANGES may differ)."""
    why = f"in the run being resumed ({run_dir}); a resumed run keeps its spec and recipe"
    found = [(path, old, new) for path, old, new in differences(saved["spec"], spec_data(spec))]
    found += [
        (("training", *path), old, new)
        for path, old, new in differences(saved["config"], config.model_dump(mode="json"))
        if path[0] not in RESUMABLE_CHANGES
    ]
    problems = [Problem(p, f"is {json.dumps(new)} here but {json.dumps(old)} {why}") for p, old, new in found]
    done = saved["position"]["epoch"]
    if config.epochs < done:
        problems.append(Problem(("training", "epochs"), f"the run being resumed already did {done} epochs"))
    if problems:
        raise ConfigProblems(problems)


DocPath = tuple[str | int, ...]


def differences(old: Any, new: Any, path: DocPath = ()) -> Iterator[tuple[DocPath, Any, Any]]:
    """Leaf paths where two plain-data trees differ (a changed `kind` is one difference)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "kind" in old and old.get("kind") != new.get("kind"):
            yield (*path, "kind"), old.get("kind"), new.get("kind")
            return
        for key in [*old, *(k for k in new if k not in old)]:
            yield from differences(old.get(key), new.get(key), (*path, key))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from differences(a, b, (*path, i))
    elif old != new:
        yield path, old, new
