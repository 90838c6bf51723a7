"""Property-based fuzzing of what a run directory holds (issue 22): run.json, metrics.csv,
events.jsonl and checkpoint payloads of a real run, mutated at the data level (values of every
type and size, keys removed, added or replaced, tensors of other shapes and dtypes) and at the
text level (truncation, garbage bytes, NULs, duplicated lines). Read back through the contract
(training/runfiles.py), the way predict, the leaderboard and `train --resume` read them, each
either works or is one BuilderError line: never another exception, never a traceback.
Derandomized, so CI is reproducible; BUILDER_FUZZ_EXAMPLES=5000 explores more.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trainer import DIGITS_SPEC

from builder.lang.errors import BuilderError
from builder.lang.loading import load_spec
from builder.tools.cli import main
from training.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from training.config import TrainingConfig
from training.data import load_data
from training.errors import ConfigProblems
from training.loggers import silent
from training.runfiles import (
    CHECKPOINT,
    EVENTS,
    METRICS,
    RUN_INFO,
    WEIGHTS,
    check_info_fits,
    check_resume,
    read_events,
    read_metrics,
    read_run_info,
    run_status,
)
from training.runinfo import EvalPreprocess
from training.trainer import Trainer

EXAMPLES = int(os.environ.get("BUILDER_FUZZ_EXAMPLES", "400"))

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(),
    st.text(max_size=8), st.sampled_from(["", "1e3", "RGB", "L", "bilinear", "cnn-builder-run", "epoch", "NaN"]),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)
TENSORS = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 5), max_size=3), st.sampled_from([torch.float32, torch.float64, torch.uint8, torch.int64]),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained run (one epoch) and what the fuzzer starts from: its files, its checkpoint, its data."""
    tmp = tmp_path_factory.mktemp("fuzz_runs")
    (tmp / "spec.yaml").write_text(DIGITS_SPEC)
    assert main(["train", str(tmp / "spec.yaml"), "--out", str(tmp / "run"), "--epochs", "1", "--quiet"]) == 0
    run = tmp / "run"
    spec = load_spec(run / "spec.yaml")
    config = TrainingConfig.model_validate({**(spec.training or {}), "epochs": 2})
    return {
        "run": run, "spec": spec, "config": config, "data": load_data(config.dataset, spec),
        "info": json.loads((run / RUN_INFO).read_text()), "metrics": (run / METRICS).read_text(),
        "events": (run / EVENTS).read_text(), "state": load_checkpoint(run / CHECKPOINT),
    }


def mutate(data: st.DataObject, value: Any, leaves: st.SearchStrategy[Any] = VALUES) -> Any:
    """Replace, remove, add or descend at one randomly chosen place of a tree."""
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value, key=str)))
        action = data.draw(st.sampled_from(["descend", "descend", "descend", "delete", "replace", "add"]))
        if action == "delete":
            return {k: v for k, v in value.items() if k != key}
        if action == "add":
            return {**value, data.draw(st.text(max_size=6)): data.draw(leaves)}
        return {**value, key: mutate(data, value[key], leaves) if action == "descend" else data.draw(leaves)}
    if isinstance(value, list | tuple) and value:
        i = data.draw(st.integers(0, len(value) - 1))
        new = mutate(data, value[i], leaves) if data.draw(st.booleans()) else data.draw(leaves)
        return [*value[:i], new, *value[i + 1:]]
    if isinstance(value, torch.Tensor) and data.draw(st.booleans()):
        return data.draw(TENSORS)
    return data.draw(leaves)


def mutate_text(data: st.DataObject, text: str) -> bytes:
    lines = text.splitlines(keepends=True)
    at = data.draw(st.integers(0, len(lines)))
    kind = data.draw(st.sampled_from(["truncate", "insert", "duplicate", "bytes", "cell"]))
    if kind == "truncate":
        return text.encode()[: data.draw(st.integers(0, len(text.encode())))]
    if kind == "insert":
        return "".join([*lines[:at], data.draw(st.text(max_size=30)) + "\n", *lines[at:]]).encode()
    if kind == "duplicate" and lines:
        return "".join([*lines[:at], lines[min(at, len(lines) - 1)], *lines[at:]]).encode()
    if kind == "cell":
        cell = data.draw(st.sampled_from(["", "nan", "inf", "1e999", "=1+1", "1_0", " 1", "x", "\x00", '"', "1,2"]))
        return text.replace(data.draw(st.sampled_from(["0.", "1", ",", "e"])), cell, 1).encode()
    return text.encode() + data.draw(st.binary(max_size=20))


@contextmanager
def global_rngs_kept() -> Iterator[None]:
    """The trainer seeds and restores the global RNGs; the rest of the suite keeps its own."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def read_back(world: dict[str, Any], run_dir: Path, target: str) -> None:
    """Read `target` as the commands do; a BuilderError is the expected refusal."""
    if target == RUN_INFO:
        info = read_run_info(run_dir)
        check_info_fits(info, world["spec"], run_dir / RUN_INFO)
        EvalPreprocess.from_info(info)(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
    elif target == METRICS:
        rows = read_metrics(run_dir / METRICS)
        assert all(isinstance(r["epoch"], int) for r in rows)
    elif target == EVENTS:
        read_events(run_dir)
        run_status(run_dir, 2)
    else:
        saved = read_checkpoint(run_dir)
        check_resume(saved, world["spec"], world["config"], run_dir)
        with global_rngs_kept():
            Trainer(world["spec"], world["config"], world["data"], torch.device("cpu"), run_dir, True, silent,
                    None, saved)


@pytest.mark.slow  # about 15 s: torch.load and a trainer per checkpoint payload
@settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 400,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_run_file_payload_gives_a_traceback(world: dict[str, Any], tmp_path: Path, data: st.DataObject) -> None:
    run_dir = Path(tempfile.mkdtemp(dir=tmp_path))
    (run_dir / WEIGHTS).write_bytes(b"")  # run_status looks at the events only once the final weights exist
    try:
        target = write_mutation(data, world, run_dir)
        read_back(world, run_dir, target)
    except ConfigProblems as exc:  # a checkpoint of another spec or recipe: one located line per difference
        assert all(line.startswith("error: ") and "\n" not in line for line in exc.lines())
    except BuilderError as exc:
        lines = exc.lines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) < 1000, lines
    finally:
        shutil.rmtree(run_dir)


def write_mutation(data: st.DataObject, world: dict[str, Any], run_dir: Path) -> str:
    """Replace one of the run's files by a mutation of it; which one."""
    target = data.draw(st.sampled_from([RUN_INFO, METRICS, EVENTS, CHECKPOINT, CHECKPOINT]))
    if target == CHECKPOINT:
        state = mutate(data, world["state"], VALUES | TENSORS)
        save_checkpoint(run_dir / CHECKPOINT, {k: v for k, v in state.items() if k not in ("format", "version")})
    elif target == RUN_INFO and data.draw(st.booleans()):
        (run_dir / RUN_INFO).write_text(json.dumps(mutate(data, world["info"])))
    else:
        text = {RUN_INFO: json.dumps(world["info"]), METRICS: world["metrics"], EVENTS: world["events"]}[target]
        (run_dir / target).write_bytes(mutate_text(data, text))
    return target
