"""The search: section: validated like specs, exact per-epoch pruning reports, two workers on one SQLite file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from builder.tools.search import EpochWatcher, run_trial
from builder.tools.sweep_plan import plan_from_args
from builder.tools.sweep_run import Children, child_env
from tests.conftest import ROOT
from tests.test_sweep import TINY, args
from training.runfiles import new_event, write_events

Cli = Callable[..., tuple[int, str, str]]

SEARCH = """\
specs: [tiny.yaml]
train: {epochs: 1}
search:
  trials: 3
  sampler: random
  params:
    training.optimizer.lr: {kind: float, low: 0.02, high: 0.2, log: true}
    defaults.norm: {kind: categorical, choices: [{kind: lrn}, {kind: batchnorm}]}
    blocks[0].out_channels: {kind: int, low: 2, high: 6, step: 2}
"""


@pytest.fixture
def sweep_file(write_spec: Callable[..., Path]) -> Path:
    write_spec(TINY, "tiny.yaml")
    return write_spec(SEARCH, "search.yaml")


def test_search_sections_are_validated_with_located_errors(write_spec: Callable[..., Path], cli: Cli) -> None:
    write_spec(TINY, "tiny.yaml")
    bad = write_spec("""\
        specs: [tiny.yaml]
        grid: {width: [0.5]}
        search:
          params:
            width: {kind: float, low: 1.0, high: 0.5}
            training.optimizer.lr: {kind: float, low: 0, high: 0.1, log: true}
            classifier.dropout: {kind: uniform, low: 0, high: 0.1}
          pruner: {kind: median, warmup_epochs: -1}
        """, "bad.yaml")
    code, out, err = cli("sweep", bad)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"{bad}:5:42: error: search.params.width.high: must be > low (1.0), got 0.5",
        f"{bad}:6:47: error: search.params.training.optimizer.lr.low: must be > 0 on a log scale, got 0.0",
        f"{bad}:7:32: error: search.params.classifier.dropout.kind: unknown kind 'uniform'; "
        "expected one of int, float, categorical",
        f"{bad}:8:41: error: search.pruner.warmup_epochs: must be >= 0, got -1",
    ]
    code, _, err = cli("sweep", write_spec("specs: [tiny.yaml]\n", "plain.yaml"), "--trials", "3")
    assert code == 2 and err.strip() == "--trials: error: needs a sweep file with a search: section"


class FakeTrial:
    def __init__(self, prune_at: int) -> None:
        self.reports: list[tuple[float, int]] = []
        self.prune_at = prune_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.reports[-1][1] >= self.prune_at


class FakeChildren(Children):
    def __init__(self) -> None:
        super().__init__()
        self.interrupts = 0

    def interrupt(self) -> None:
        self.interrupts += 1


def test_each_epoch_reports_exactly_its_metrics_row_and_a_prune_stops_the_child(tmp_path: Path) -> None:
    rows = [["epoch", "test_acc", "val_acc"], [1, 0.5, 0.25], [2, "", ""], [3, 0.75, 0.5]]
    trial, children = FakeTrial(prune_at=3), FakeChildren()
    watcher = EpochWatcher(tmp_path, "val_acc", trial, children)  # type: ignore[arg-type]
    watcher.on_line("the banner\n")  # nothing done yet
    for n in range(1, 4):
        with (tmp_path / "metrics.csv").open("w", newline="") as f:
            csv.writer(f).writerows(rows[: n + 1])
        write_events(tmp_path, [new_event("epoch", epoch=i, epochs=5) for i in range(1, n + 1)])
        watcher.on_line("any line\n")  # the log's words are never read: the events say what is done
        watcher.on_line("another line\n")
    assert trial.reports == [(0.25, 1), (0.5, 3)]  # epoch 2 had no evaluation
    assert watcher.pruned and children.interrupts == 1 and watcher.best == 0.5 and watcher.last_epoch == 3

    # At the last epoch the trial is reported but never pruned: it is complete.
    trial, children = FakeTrial(prune_at=1), FakeChildren()
    watcher = EpochWatcher(tmp_path, "test_acc", trial, children)  # type: ignore[arg-type]
    write_events(tmp_path, [new_event("epoch", epoch=i, epochs=3) for i in range(1, 4)])
    watcher.on_line("epoch 3/3  train loss ...\n")
    assert trial.reports == [(0.75, 3)] and not watcher.pruned and children.interrupts == 0


def test_a_sample_the_spec_cannot_take_is_a_failed_trial_with_its_located_reason(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    write_spec(TINY, "tiny.yaml")
    path = write_spec(SEARCH.replace("{kind: int, low: 2, high: 6, step: 2}", "{kind: categorical, choices: [0]}"),
                      "search.yaml")
    plan = plan_from_args(args(str(path), out=str(tmp_path / "s")))
    assert plan.search is not None
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    outcome = run_trial(plan, plan.search, study, trial, Children(), child_env(1), lambda line: None)
    assert outcome.status == "failed" and study.trials[0].state == optuna.trial.TrialState.FAIL
    record = json.loads((tmp_path / "s" / "trial-0000" / "variant.json").read_text())
    assert record["status"] == "failed" and record["reason"] == outcome.reason
    assert outcome.reason == "--set blocks[0].out_channels=0: error: blocks[0].out_channels: must be > 0, got 0"


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_and_its_budget(sweep_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "builder", "sweep", str(sweep_file), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for _ in range(2)]
    logs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert all(": training " in log for log in logs)  # each worker ran trials of the one study

    study = optuna.load_study(study_name="search", storage=f"sqlite:///{out / 'study.db'}")
    ran = [t for t in study.trials if "skipped" not in t.user_attrs]  # two workers may both ask for the last one
    assert sorted(t.number for t in ran) == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    for t in ran:
        run = out / f"trial-{t.number:04d}"
        with (run / "metrics.csv").open(newline="") as f:
            last = list(csv.DictReader(f))[-1]
        column = "val_acc" if last.get("val_acc") else "test_acc"  # the search's metric, as epoch_metric reads it
        assert t.value == float(last[column])  # the study's value is the run's metrics.csv, exactly
        record = json.loads((run / "variant.json").read_text())
        assert record["status"] == "done" and f"blocks[0].out_channels={t.params['blocks[0].out_channels']}" in (
            record["overrides"])
    with (out / "leaderboard.csv").open(newline="") as f:
        assert sorted(r["variant"] for r in csv.DictReader(f)) == ["trial-0000", "trial-0001", "trial-0002"]




def test_grid_flags_on_a_search_are_refused(sweep_file: Path, cli: Cli) -> None:
    code, out, err = cli("sweep", sweep_file, "--grid", "width=0.5,1", "--jobs", "2")
    assert code == 2 and out == "" and err.splitlines() == [
        "--grid: error: a search samples its own variants",
        "--jobs: error: a worker trains one trial at a time; start several workers",
    ]


def test_a_bad_storage_url_is_one_clear_error(sweep_file: Path, tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("sweep", sweep_file, "--out", tmp_path / "s", "--storage", "nodb")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: cannot open the study storage nodb: ")
