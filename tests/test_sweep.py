"""`python -m builder sweep`: expansion and naming, validation before training, failures, skip and resume."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from builder.lang.loading import load_spec
from builder.tools.sweep_plan import expand, plan_from_args, variant_name
from builder.tools.sweep_run import child_env
from tests.conftest import ROOT
from training import TrainingConfig, train
from training.checkpoint import CHECKPOINT, WEIGHTS, load_weights

Cli = Callable[..., tuple[int, str, str]]

# 1x8x8 digits, two blocks of 4 channels: an epoch takes a fraction of a second; the start-up of
# each `train` subprocess (importing torch) is most of a variant's time.
TINY = """\
name: tiny_digits
input: {channels: 1, height: 8, width: 8}
num_classes: 10
defaults: {norm: {kind: batchnorm}, pool: {kind: max, kernel_size: 2, stride: 2}}
blocks:
  - {out_channels: 4, kernel_size: 3, padding: 1, pool_and_norm: true}
  - {out_channels: 4, kernel_size: 3, padding: 1, pool_and_norm: true}
classifier: {hidden: [16], dropout: 0.1}
training: {epochs: 2, batch_size: 128, optimizer: {kind: sgd, lr: 0.1}}
"""


@pytest.fixture
def tiny(write_spec: Callable[..., Path]) -> Path:
    return write_spec(TINY, "tiny.yaml")


def args(*paths: str, **kw: object) -> Namespace:
    from training.flags import RUN_FLAGS  # every training flag the sweep passes on, unset

    base: dict[str, object] = {f.dest: None for f in RUN_FLAGS}
    base.update(paths=list(paths), grid=[], overrides=[], seeds=None, jobs=None, out=None)
    return Namespace(**{**base, **kw})


def last_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


# --- expansion and naming -------------------------------------------------------------------------


def test_grid_expands_as_a_product_with_readable_unique_names(tiny: Path) -> None:
    grid = ["classifier.dropout=0.1,0.3", "defaults.norm={kind: lrn},{kind: batchnorm}"]
    plan = plan_from_args(args(str(tiny), grid=grid, seeds=2, seed=5))
    variants = expand(plan)
    assert len(variants) == 2 * 2 * 2
    assert variants[0].name == "tiny--classifier.dropout=0.1--defaults.norm=lrn--seed=5"
    assert [v.seed for v in variants[:2]] == [5, 6] and variants[0].group == variants[1].group
    assert len({v.name for v in variants}) == 8 and len({v.group for v in variants}) == 4
    assert [o.arg for o in variants[-1].overrides] == ["classifier.dropout=0.3", 'defaults.norm={"kind": "batchnorm"}']
    assert plan.out == Path("sweeps/tiny")


def test_names_are_safe_directory_names_and_values_that_slug_alike_stay_apart(tiny: Path) -> None:
    plan = plan_from_args(args(str(tiny), grid=["classifier.hidden=[8, 8],[8/8]", "blocks[0].out_channels=4"]))
    names = [v.name for v in expand(plan)]
    assert names == ["tiny--classifier.hidden=8-8--blocks0.out_channels=4",
                     "tiny--classifier.hidden=8_8--blocks0.out_channels=4"]
    from builder.tools.sweep_plan import Override

    long = variant_name("tiny", [Override("classifier.hidden", list(range(100)), "x")])
    assert len(long) <= 150 and "/" not in long


def test_a_spec_named_with_dots_gets_its_runs_inside_the_sweep_directory(tiny: Path) -> None:
    dots = tiny.with_name("...yaml")
    dots.write_text(tiny.read_text())
    names = [v.name for v in expand(plan_from_args(args(str(dots))))]
    assert names == ["_"]
    assert variant_name(".hidden", []) == "hidden"


def test_a_sweep_file_gives_specs_grid_override_sets_and_flags(tiny: Path, write_spec: Callable[..., Path]) -> None:
    sweep = write_spec("""\
        specs: [tiny.yaml]
        overrides: ["training.batch_size=64"]
        grid: {width: [0.5, 1.0]}
        variants:
          - {classifier.dropout: 0.0}
          - {classifier.dropout: 0.2, defaults.norm: {kind: none}}
        train: {epochs: 1, data: digits}
        jobs: 2
        """, "sweep.yaml")
    plan = plan_from_args(args(str(sweep), epochs=3))
    variants = expand(plan)
    assert [v.name for v in variants] == [
        "tiny--classifier.dropout=0.0--width=0.5", "tiny--classifier.dropout=0.0--width=1.0",
        "tiny--classifier.dropout=0.2--defaults.norm=none--width=0.5",
        "tiny--classifier.dropout=0.2--defaults.norm=none--width=1.0",
    ]
    assert plan.flags == {"epochs": 3, "data": "digits"} and plan.jobs == 2  # the command line's --epochs wins
    assert plan.common == ["training.batch_size=64"] and plan.out == Path("sweeps/sweep")
    assert variants[0].overrides[1].origin == f"{sweep}:3:16"  # width 0.5's place in the sweep file


def test_a_bad_sweep_file_gets_located_errors(write_spec: Callable[..., Path], cli: Cli) -> None:
    sweep = write_spec("""\
        specs: [tiny.yaml]
        grid: {classifier.dropout: [], "blocks[x]": [1]}
        seedz: 2
        """, "sweep.yaml")
    code, out, err = cli("sweep", sweep)
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert f"{sweep}:2:28: error: grid.classifier.dropout: must have at least 1 items" in lines
    assert f"{sweep}:3:1: error: seedz: unknown field 'seedz'; did you mean 'seeds'?" in lines


# --- validation before anything trains ----------------------------------------------------------------


def test_the_fourth_variants_impossible_shape_fails_before_the_first_trains(tiny: Path, tmp_path: Path,
                                                                             cli: Cli) -> None:
    out = tmp_path / "sweep"
    code, stdout, err = cli("sweep", tiny, "--grid", "blocks[0].kernel_size=1,3,5,9", "--out", out)
    assert code == 2 and stdout == "" and not out.exists()
    lines = err.strip().splitlines()
    assert lines[0] == ("--grid blocks[0].kernel_size=1,3,5,9: error: variant 4 of 4 (tiny--blocks0.kernel_size=9: "
                        f"{tiny} --set blocks[0].kernel_size=9) is invalid:")
    assert lines[1] == (f"  {tiny}:7:5: error: blocks[1]: block2: spatial size collapses to 0x0 (its input is 4x1x1); "
                        "blocks[0].kernel_size is set at --set blocks[0].kernel_size=9")
    assert lines[-1] == "nothing was trained: 1 of 4 variants are invalid"


def test_a_bad_grid_value_or_flag_is_located_at_the_argument(tiny: Path, tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("sweep", tiny, "--grid", "training.epochs=1,0", "--out", tmp_path / "s")
    assert code == 2 and "variant 2 of 2" in err
    assert "  --set training.epochs=0: error: training.epochs: must be > 0, got 0" in err.splitlines()
    code, _, err = cli("sweep", tiny, "--grid", "classifier.dropout", "--out", tmp_path / "s")
    assert code == 2 and err.startswith("--grid classifier.dropout: error: expected FIELD=V1,V2,...")


# --- running: failures, leaderboard, skip ----------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_variant_is_recorded_and_the_sweep_goes_on_then_finished_ones_are_skipped(
    tiny: Path, tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "sweep"
    # num_classes=4 validates, but digits has 10 classes: the trainer refuses it once it loads the data.
    argv = ("sweep", tiny, "--grid", "num_classes=4,10", "--epochs", "1", "--jobs", "2", "--out", out)
    code, stdout, _ = cli(*argv)
    assert code == 1, stdout
    good, bad = out / "tiny--num_classes=10", out / "tiny--num_classes=4"
    record = json.loads((bad / "variant.json").read_text())
    assert record["status"] == "failed" and record["exit_code"] == 2
    assert "the digits dataset has 10 classes but the spec has only 4 outputs" in record["reason"]
    assert json.loads((good / "variant.json").read_text())["status"] == "done"

    # The done criterion: the leaderboard's test_acc is the last test_acc of each run's metrics.csv.
    with (out / "leaderboard.csv").open(newline="") as f:
        board = {row["variant"]: row for row in csv.DictReader(f)}
    assert float(board[good.name]["test_acc"]) == float(last_rows(good)[-1]["test_acc"])
    assert board[bad.name]["status"] == "failed" and "10 classes" in board[bad.name]["reason"]
    assert board[good.name]["rank"] == "1" and "1 done, 1 failed" in stdout

    mtime = (good / WEIGHTS).stat().st_mtime_ns
    code, stdout, _ = cli(*argv[:3], "num_classes=10", *argv[4:])
    assert code == 0 and f"{good.name}: finished before, skipped" in stdout and "1 skipped" in stdout
    assert (good / WEIGHTS).stat().st_mtime_ns == mtime

    # A base edited since (here: --set, which is not part of the name) is not silently "finished".
    code, stdout, err = cli(*argv[:3], "num_classes=10", "--set", "classifier.dropout=0.2", *argv[4:])
    assert code == 2 and stdout == ""
    assert err.splitlines()[1] == (
        f"  {good}: error: holds a finished run of another spec or recipe "
        "(classifier.dropout is 0.2 here but 0.1 in the run); remove it or choose another --out"
    )


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_its_variant_exactly(tiny: Path, tmp_path: Path, cli: Cli) -> None:
    """Ctrl-C reaches the sweep, which passes it on; the same command later ends where one run would."""
    out = tmp_path / "sweep"
    argv = ["sweep", str(tiny), "--epochs", "4", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "builder", *argv], cwd=tmp_path, env={**os.environ,
                            "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = out / "tiny"
    deadline = time.monotonic() + 60
    while not ((run / "metrics.csv").is_file() and len(last_rows(run)) >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert json.loads((run / "variant.json").read_text())["status"] == "interrupted"
    assert (run / CHECKPOINT).is_file() and not (run / WEIGHTS).exists()
    assert "run the same command again to resume" in stdout

    code, stdout, _ = cli(*argv)
    assert code == 0 and "tiny: resuming" in stdout
    assert re.search(r"^resuming (at|after) epoch \d", (run / "train.log").read_text(), re.MULTILINE)

    spec = load_spec(tiny)
    config = TrainingConfig.model_validate({**(spec.training or {}), "epochs": 4})
    train(spec, config, out=tmp_path / "whole", quiet=True, log=lambda line: None)
    a, b = load_weights(run / WEIGHTS), load_weights(tmp_path / "whole" / WEIGHTS)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len(last_rows(run)) == 4


def test_jobs_divide_the_cpu_threads_between_the_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    env = child_env(2)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, cpus // 2))
    assert "OMP_NUM_THREADS" not in child_env(1)  # one at a time: torch's own default
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)  # the children run this very package


def test_a_sweep_file_that_does_not_parse_is_reported_as_itself(write_spec: Callable[..., Path], cli: Cli) -> None:
    bad = write_spec("specs: [tiny.yaml]\nvariants:\n  - {blocks[2].norm: {kind: none}}\n", "sweep.yaml")
    code, _, err = cli("sweep", bad)
    assert code == 2 and err.strip() == f"{bad}:3:12: error: invalid YAML: expected ',' or '}}', but got '['"


def test_the_sweep_files_train_section_takes_trains_flags_with_their_bounds(
    write_spec: Callable[..., Path], tiny: Path, cli: Cli
) -> None:
    sweep = write_spec("specs: [tiny.yaml]\ntrain: {batch_size: 8, data: fake, lr: 1.0e+308, quiet: true}\n", "s.yaml")
    code, _, err = cli("sweep", sweep)
    assert code == 2 and err.splitlines() == [
        f"{sweep}:2:40: error: train.lr: must be <= 1000000.0, got 1e+308",
        f"{sweep}:2:50: error: train.quiet: unknown field 'quiet'",
    ]
