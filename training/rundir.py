"""The run directory: choosing and creating it, the files that describe the run, and the checks
that a resumed run is the same run (spec and recipe) as the one in its checkpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builder.lang.errors import Problem
from builder.lang.loading import dump_spec
from builder.lang.spec import Spec
from training.checkpoint import CHECKPOINT, load_checkpoint
from training.config import RESUMABLE_CHANGES, TrainingConfig
from training.errors import CheckpointError, ConfigProblems, RunDirError
from training.files import write_text
from training.runinfo import SPEC_FILE

SUMMARY_FILE = "summary.txt"
STATE_KEYS = frozenset({"spec", "config", "position", "model", "optimizer", "scheduler", "scaler", "rng"})


def new_run_dir(out: str | Path | None, name: str) -> Path:
    """`out`, or runs/<name>-<YYYYmmdd-HHMMSS>[-N] (not created yet); refused if it holds a run."""
    if out is None:
        base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 2
        while path.exists():
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
    else:
        path = Path(out)
    if (path / CHECKPOINT).exists():
        raise RunDirError(f"{path} already holds a run; continue it with --resume {path}, or choose another --out")
    return path


def make_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the output directory {path}: {exc.strerror or exc}") from None


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


def resumed_state(spec: Spec, config: TrainingConfig, run_dir: Path, out: str | Path | None) -> dict[str, Any]:
    """The checkpoint of the run in `run_dir`, once it is known to fit this spec and recipe."""
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise RunDirError(f"--out {out} and --resume {run_dir} differ: a resumed run writes into its own directory")
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
