"""The leaderboard reads run directories: values equal the files', seeds averaged, a Pareto front drawn."""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from builder.lang.loading import dump_spec, load_spec
from builder.lang.shapes import infer
from builder.tools.leaderboard import pareto_front, write_leaderboard
from tests.conftest import TINY_SPEC
from training.runfiles import new_event, write_events

Cli = Callable[..., tuple[int, str, str]]


def make_run(
    root: Path, name: str, spec_path: Path, accs: Sequence[tuple[float, float | None]], *, group: str | None = None,
    overrides: Sequence[str] = (), status: str = "done", reason: str = "", seconds: float = 2.0, ended: bool = True,
) -> Path:
    """A run directory as the trainer and the sweep leave it: (test_acc, val_acc or None) per epoch."""
    run = root / name
    run.mkdir(parents=True)
    run.joinpath("spec.yaml").write_text(dump_spec(load_spec(spec_path, list(overrides))))
    with_val = accs and accs[0][1] is not None
    columns = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", *(["val_loss", "val_acc"] * bool(with_val)),
               "lr", "seconds"]
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for epoch, (test, val) in enumerate(accs, start=1):
            writer.writerow([epoch, 1.0, 0.5, 0.9, test, *([0.8, val] if with_val else []), 0.01, seconds])
    start = new_event("start", resumed=False, epoch=0, epochs=max(len(accs), 1), train_images=1000, val_images=None,
                      test_images=360, steps_per_epoch=16, device="cpu", precision="fp32")
    end = new_event("end", epoch=len(accs), best_epoch=len(accs), stopped_early=False)
    write_events(run, [start, end] if ended else [start])
    record = {"name": name, "group": group or name, "overrides": list(overrides), "status": status, "reason": reason}
    run.joinpath("variant.json").write_text(json.dumps(record))
    return run


@pytest.fixture
def spec_path(write_spec: Callable[..., Path]) -> Path:
    return write_spec(TINY_SPEC)


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_rows_hold_the_run_directories_values_sorted_by_best_test_acc(spec_path: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep, "wide", spec_path, [(0.5, None), (0.75, None), (0.7, None)], overrides=["width=2.0"])
    make_run(sweep, "base", spec_path, [(0.6, None), (0.65, None)])
    make_run(sweep, "broken", spec_path, [], status="failed", reason="error: training.device: cuda is not available")
    board = write_leaderboard(sweep)
    rows = read(sweep / "leaderboard.csv")
    assert [r["variant"] for r in rows] == ["wide", "base", "broken"]  # best first, failed last
    wide = rows[0]
    assert float(wide["best_val_acc"]) == 0.75 and float(wide["test_acc"]) == 0.7 and wide["val_metric"] == "test_acc"
    assert wide["epochs"] == "3" and float(wide["seconds"]) == 6.0 and float(wide["images_per_s"]) == 3 * 1000 / 6.0
    static = infer(load_spec(sweep / "wide" / "spec.yaml"))
    assert int(wide["params"]) == static.total_params and int(wide["mult_adds"]) == static.mult_adds
    assert int(wide["params"]) > int(rows[1]["params"])  # width 2 really is the wider one
    assert rows[2]["status"] == "failed" and rows[2]["reason"].endswith("cuda is not available")
    assert "selects on the test set" in board.markdown and "| 1 | wide | width=2.0 |" in board.markdown
    assert (sweep / "pareto.png").stat().st_size > 10_000 and (sweep / "leaderboard.md").read_text() == board.markdown


def test_val_acc_is_used_where_metrics_have_it(spec_path: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_run(sweep, "a", spec_path, [(0.9, 0.6), (0.5, 0.7)])
    make_run(sweep, "b", spec_path, [(0.6, 0.8), (0.6, 0.65)])
    board = write_leaderboard(sweep)
    rows = read(sweep / "leaderboard.csv")
    assert [(r["variant"], float(r["best_val_acc"]), float(r["test_acc"])) for r in rows] == [
        ("b", 0.8, 0.6), ("a", 0.7, 0.5)
    ]
    assert {r["val_metric"] for r in rows} == {"val_acc"} and "validation split" in board.markdown
    assert [r["variant"] for r in read_sorted(sweep, "test_acc")] == ["b", "a"]


def read_sorted(sweep: Path, sort: str) -> list[dict[str, str]]:
    write_leaderboard(sweep, sort)  # type: ignore[arg-type]
    return read(sweep / "leaderboard.csv")


def test_seeds_of_a_variant_form_one_row_with_mean_and_std(spec_path: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for seed, acc in enumerate([0.5, 0.7, 0.9]):
        make_run(sweep, f"v--seed={seed}", spec_path, [(acc, None)], group="v")
    write_leaderboard(sweep)
    (row,) = read(sweep / "leaderboard.csv")
    assert row["variant"] == "v" and row["runs"] == "3"
    assert float(row["test_acc"]) == pytest.approx(0.7)
    assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))
    assert "70.00% ± 20.00" in (sweep / "leaderboard.md").read_text()


def test_plain_train_runs_are_read_too(spec_path: Path, tmp_path: Path) -> None:
    """Run directories `train` made by itself (no variant.json) rank by their own names."""
    for name, weights in (("finished", True), ("stopped", False)):
        run = make_run(tmp_path / "s", name, spec_path, [(0.5 if weights else 0.25, None)], ended=weights)
        (run / "variant.json").unlink()
        (run / ("model.safetensors" if weights else "checkpoint.pt")).write_bytes(b"")
    write_leaderboard(tmp_path / "s")
    assert [(r["variant"], r["status"]) for r in read(tmp_path / "s" / "leaderboard.csv")] == [
        ("finished", "done"), ("stopped", "interrupted")
    ]


def test_pareto_front_keeps_points_no_cheaper_point_beats() -> None:
    points = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (40, 0.9), (5, 0.3)]
    assert pareto_front(points) == [5, 0, 1, 4]


def test_leaderboard_command_writes_the_files_and_refuses_a_missing_directory(
    spec_path: Path, tmp_path: Path, cli: Cli
) -> None:
    make_run(tmp_path / "s", "only", spec_path, [(0.25, None)])
    code, out, _ = cli("leaderboard", tmp_path / "s", "--x", "params")
    assert code == 0 and "| 1 | only | (base) |" in out and "pareto.png" in out
    code, out, err = cli("leaderboard", tmp_path / "nope")
    assert code == 2 and out == "" and err.strip() == f"error: {tmp_path / 'nope'}: no such sweep directory"
