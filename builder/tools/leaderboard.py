"""`python -m builder leaderboard DIR`: one row per variant of a sweep, read from its run directories.

Every number comes from a run directory, read through training/runfiles: parameters and
mult-adds from the resolved `spec.yaml` (static inference, as `validate` prints them), the
monitored metric (its `training.monitor`: val_acc for classification, val_miou for segmentation,
...), epochs and time from `metrics.csv`, the training images per epoch from the trainer's `start`
event in `events.jsonl`. A run directory whose files are damaged is a row "unreadable" with the
one-line reason (and `leaderboard` exits 2 after writing the board). Runs that differ only in their
seed form one row (mean and sample standard deviation). Writes leaderboard.csv, leaderboard.md
and pareto.png (accuracy against mult-adds or parameters, the Pareto front drawn).
"""

from __future__ import annotations

import argparse
import io
import math
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from builder.lang.errors import BuilderError, SpecError
from builder.lang.files import write_bytes, write_text
from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from training.errors import RunFileError
from training.runfiles import METRICS, SPEC_FILE, StartEvent, read_events, read_metrics, read_record, run_status

if TYPE_CHECKING:
    from training.tasks import Metric

Sort = Literal["best_val_acc", "test_acc", "params", "mult_adds", "seconds"]
XAxis = Literal["mult_adds", "params"]


@dataclass(frozen=True)
class RunResult:
    """One run directory, as its files say."""

    name: str
    group: str
    spec_name: str
    overrides: tuple[str, ...]
    status: str
    reason: str
    params: int | None
    mult_adds: int | None
    epochs: int
    best_val_acc: float | None  # best per-epoch monitored metric (val_acc, val_miou...), or its test_ column
    val_metric: str  # which column best_val_acc came from (where metrics.csv has no val_*: test_*)
    test_acc: float | None  # the last epoch's test_ column of the same metric
    seconds: float
    images_per_s: float | None


@dataclass(frozen=True)
class Row:
    """A variant: its runs (one per seed) summarized."""

    variant: str
    spec: str
    overrides: str
    runs: int
    params: int | None
    mult_adds: int | None
    best_val_acc: float | None
    best_val_acc_std: float | None
    val_metric: str
    test_acc: float | None
    test_acc_std: float | None
    epochs: int
    seconds: float
    images_per_s: float | None
    status: str
    reason: str


@dataclass(frozen=True)
class Leaderboard:
    rows: list[Row]
    markdown: str
    csv_path: Path
    md_path: Path
    png_path: Path | None
    problems: tuple[str, ...] = ()  # one line per run directory that could not be read


def read_run(run_dir: Path) -> RunResult | None:
    """The results of a run directory, or None when it holds neither a sweep record nor a run;
    a RunFileError line when one of its files is damaged."""
    record = read_record(run_dir) or {}
    if not record and not (run_dir / METRICS).exists():
        return None
    rows = read_metrics(run_dir / METRICS, required=False)
    params, mult_adds, spec_name, monitor = _static(run_dir / SPEC_FILE)
    name = monitor.removeprefix("val_")
    val_metric = f"val_{name}" if rows and f"val_{name}" in rows[0] else f"test_{name}"
    vals = [v for r in rows if (v := r.get(val_metric)) is not None]
    tests = [v for r in rows if (v := r.get(f"test_{name}")) is not None]
    seconds = sum(r.get("seconds") or 0.0 for r in rows)
    images = _train_images(run_dir)
    status = str(record.get("status") or _plain_status(run_dir))
    return RunResult(
        name=run_dir.name, group=str(record.get("group", run_dir.name)), spec_name=spec_name,
        overrides=tuple(record.get("overrides", ())), status=status, reason=str(record.get("reason", "")),
        params=params, mult_adds=mult_adds, epochs=rows[-1]["epoch"] if rows else 0,
        best_val_acc=(max if higher_is_better(val_metric) else min)(vals) if vals else None, val_metric=val_metric,
        test_acc=tests[-1] if tests else None,
        seconds=seconds, images_per_s=images * len(rows) / seconds if images and seconds > 0 else None,
    )


def _plain_status(run_dir: Path) -> str:
    """A run directory that `train` made by itself (no variant.json): done, or stopped with a checkpoint."""
    status = run_status(run_dir)
    return status if status in ("done", "interrupted") else "unknown"


def _unreadable(run_dir: Path, why: str) -> RunResult:
    return RunResult(name=run_dir.name, group=run_dir.name, spec_name="", overrides=(), status="unreadable",
                     reason=why, params=None, mult_adds=None, epochs=0, best_val_acc=None, val_metric="test_acc",
                     test_acc=None, seconds=0.0, images_per_s=None)


def _static(spec_path: Path) -> tuple[int | None, int | None, str, str]:
    """Parameters and mult-adds of the run's resolved spec (the same inference as `validate`),
    its name and its monitored metric (val_acc where the spec cannot say)."""
    if not spec_path.is_file():
        return None, None, "", "val_acc"
    try:
        spec = load_spec(spec_path)
    except SpecError:
        return None, None, "", "val_acc"
    report = infer(spec)
    return report.total_params, report.mult_adds, spec.name, monitored(spec.training)


def monitored(training: dict[str, Any] | None) -> str:
    """The `training.monitor` a run was trained with (its task's default when unset)."""
    from pydantic import ValidationError

    from training.config import TrainingConfig

    try:
        return str(TrainingConfig.model_validate(training or {}).monitor)
    except ValidationError:
        return "val_acc"


def higher_is_better(column: str) -> bool:
    """Every metric a task logs is better higher, the loss lower."""
    return not column.endswith("_loss")


def metric_of(column: str) -> Metric | None:
    """The task metric of a metrics.csv column (val_miou -> mIoU), None for the loss."""
    from training.tasks import TASKS

    name = column.partition("_")[2]
    return next((m for kind in TASKS.values() for m in kind.metrics if m.name == name), None)


def _train_images(run_dir: Path) -> int | None:
    """Training images per epoch, from the trainer's first `start` event (a resume repeats it)."""
    start = next((e for e in read_events(run_dir) if isinstance(e, StartEvent)), None)
    return start.train_images if start is not None else None


def summarize_runs(runs: Sequence[RunResult]) -> Row:
    """One row from the runs of a variant (its seeds): means and sample standard deviations."""
    first = runs[0]
    done = [r for r in runs if r.status in ("done", "pruned")] or list(runs)
    vals = [r.best_val_acc for r in done if r.best_val_acc is not None]
    tests = [r.test_acc for r in done if r.test_acc is not None]
    speeds = [r.images_per_s for r in done if r.images_per_s is not None]
    statuses = sorted({r.status for r in runs})
    return Row(
        variant=first.group, spec=first.spec_name, overrides=" ".join(first.overrides), runs=len(runs),
        params=first.params, mult_adds=first.mult_adds, best_val_acc=_mean(vals), best_val_acc_std=_std(vals),
        val_metric=first.val_metric, test_acc=_mean(tests), test_acc_std=_std(tests),
        epochs=max(r.epochs for r in runs), seconds=_mean([r.seconds for r in done]) or 0.0,
        images_per_s=_mean(speeds), status="/".join(statuses),
        reason="; ".join(sorted({r.reason for r in runs if r.reason and r.status in ("failed", "unreadable")})),
    )


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: Sequence[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def collect(directory: Path, sort: Sort = "best_val_acc", problems: list[str] | None = None) -> list[Row]:
    """The rows of every run directory below `directory`, best first (failed runs last); a damaged
    one is a row "unreadable", its reason also appended to `problems`."""
    groups: dict[str, list[RunResult]] = {}
    for run_dir in sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink()):
        try:
            result = read_run(run_dir)
        except RunFileError as exc:
            result = _unreadable(run_dir, str(exc))
            if problems is not None:
                problems.append(f"error: {exc}")
        if result is not None:
            groups.setdefault(result.group, []).append(result)
    rows = [summarize_runs(runs) for runs in groups.values()]
    return sorted(rows, key=lambda r: _sort_key(r, sort))


def _sort_key(row: Row, sort: Sort) -> tuple[Any, ...]:
    value = getattr(row, sort)
    higher = higher_is_better(row.val_metric)
    descending = sort in ("best_val_acc", "test_acc") and higher
    missing = value is None
    test = -(row.test_acc or 0) if higher else (row.test_acc or 0)
    return (missing, -(value or 0) if descending else (value or 0), test, row.variant)


# --- writing ------------------------------------------------------------------------------------


def write_leaderboard(directory: Path, sort: Sort = "best_val_acc", x: XAxis = "mult_adds") -> Leaderboard:
    """leaderboard.csv, leaderboard.md and pareto.png in `directory`."""
    if not directory.is_dir():
        raise BuilderError(f"{directory}: no such sweep directory")
    problems: list[str] = []
    rows = collect(directory, sort, problems)
    csv_path, md_path = directory / "leaderboard.csv", directory / "leaderboard.md"
    write_text(csv_path, to_csv(rows))  # atomic: search workers on one sweep directory each rewrite it
    png = directory / "pareto.png" if plot_pareto(directory / "pareto.png", rows, x) else None
    text = to_markdown(rows, directory, sort, png)
    write_text(md_path, text)
    return Leaderboard(rows, text, csv_path, md_path, png, tuple(problems))


def to_csv(rows: Sequence[Row]) -> str:
    """Fractions and raw counts, full precision: the values read from the run directories."""
    from training.tasks.base import table_text  # text cells escaped against formulas

    names = [f.name for f in fields(Row)]
    return table_text(["rank", *names], [[rank, *("" if getattr(row, n) is None else getattr(row, n) for n in names)]
                                         for rank, row in enumerate(rows, start=1)])


def to_markdown(rows: Sequence[Row], directory: Path, sort: Sort, png: Path | None) -> str:
    metrics = sorted({r.val_metric for r in rows if r.best_val_acc is not None})
    title = _title(metrics)
    lines = [f"# Leaderboard of {directory}", "", _metric_note(metrics) + f" Sorted by {sort}.", ""]
    lines += [
        f"| # | variant | overrides | params | mult-adds | best val {title} | test {title} | epochs | time | img/s "
        "| status |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rank, r in enumerate(rows, start=1):
        status = r.status + (f": {r.reason}" if r.reason else "")
        lines.append(
            f"| {rank} | {r.variant} | {_readable(r.overrides) or '(base)'} | {_count(r.params)} | "
            f"{_giga(r.mult_adds)} | {_value(r.val_metric, r.best_val_acc, r.best_val_acc_std)} | "
            f"{_value(r.val_metric, r.test_acc, r.test_acc_std)} "
            f"| {r.epochs} | {r.seconds:.1f}s | {_count(r.images_per_s)} | {status.replace('|', '/')} |"
        )
    if png is not None:
        lines += ["", f"![accuracy against cost, the Pareto front drawn]({png.name})"]
    return "\n".join(lines) + "\n"


def _readable(overrides: str) -> str:
    """Overrides for the markdown table: sampled floats to 4 digits (the csv keeps them whole)."""
    text = re.sub(r"\d+\.\d{5,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.4g}", overrides)
    return text.replace("|", "/")


def _title(columns: list[str]) -> str:
    """How the table heads the metric: acc, mIoU, loss; `metric` for a mix."""
    names = {c.partition("_")[2] for c in columns} or {"acc"}
    if len(names) > 1:
        return "metric"
    (name,) = names
    found = metric_of(f"val_{name}")
    return "acc" if name == "acc" else found.title if found is not None else name


def _metric_note(metrics: list[str]) -> str:
    title = _title(metrics)
    if len(metrics) == 1 and metrics[0].startswith("val_"):
        return f"Best val {title}: the best per-epoch `{metrics[0]}` of metrics.csv (the validation split)."
    if len(metrics) == 1:
        return (f"Best val {title}: the best per-epoch `{metrics[0]}` of metrics.csv: these runs have no validation "
                "split, so choosing by it selects on the test set.")
    return (f"Best val {title}: the monitored `val_*` metric where metrics.csv has it, else its `test_*` column "
            "(see the val_metric column of the csv).")


def _value(column: str, value: float | None, std: float | None) -> str:
    """A percentage for accuracies, four decimals for mIoU, Dice and the loss (Metric.format)."""
    if value is None:
        return "-"
    metric = metric_of(column)
    if metric is None or not metric.percent:
        return f"{value:.4f}" + (f" ± {std:.4f}" if std is not None else "")
    return f"{100 * value:.2f}%" + (f" ± {100 * std:.2f}" if std is not None else "")


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _giga(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e9:.3f} G" if value >= 1e8 else f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value:,}"


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (cost no higher and accuracy higher), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_pareto(path: Path, rows: Sequence[Row], x: XAxis) -> bool:
    """The monitored metric against cost, each point labelled with its variant; False when nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.best_val_acc is not None and getattr(r, x) is not None]
    if not shown:
        return False
    metric = metric_of(shown[0].val_metric)
    scale = 100 if metric is not None and metric.percent else 1
    points = [(float(getattr(r, x)), scale * (r.best_val_acc or 0.0)) for r in shown]
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    _points_and_front(ax, points, [("pruned" in r.status or "interrupted" in r.status) for r in shown],
                      higher_is_better(shown[0].val_metric))
    if max(p[0] for p in points) > 10 * min(p[0] for p in points):
        ax.set_xscale("log")
    ax.margins(x=0.08, y=0.1)
    _annotate(ax, shown, points)
    _axes(ax, x, shown[0].val_metric + (" (%)" if scale == 100 else ""))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_bytes(path, buffer.getvalue())
    return True


def _points_and_front(ax: Any, points: Sequence[tuple[float, float]], stopped: Sequence[bool],
                      higher: bool = True) -> None:
    """Finished runs filled, stopped ones hollow (fewer epochs: not comparable, so off the front);
    the front of the highest values (the lowest, for a loss)."""
    for hollow, label in ((False, "finished"), (True, "pruned or interrupted")):
        xy = [p for p, s in zip(points, stopped) if s == hollow]
        if xy:
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], s=30, zorder=3, label=label,
                       facecolors="none" if hollow else "C0", edgecolors="C0")
    candidates = [p for p, s in zip(points, stopped) if not s] or list(points)
    sign = 1 if higher else -1
    front = [candidates[i] for i in pareto_front([(c, sign * v) for c, v in candidates])]
    ax.plot([p[0] for p in front], [p[1] for p in front], "r--", lw=1.2, label="Pareto front")


def _axes(ax: Any, x: XAxis, metric: str) -> None:
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    if ax.get_xscale() == "log":  # ticks at 1, 2, 5 x 10^k, labelled like the rest
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel("mult-adds per image" if x == "mult_adds" else "parameters")
    ax.set_ylabel(f"best {metric}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")


def _annotate(ax: Any, rows: Sequence[Row], points: Sequence[tuple[float, float]]) -> None:
    """Labels inside the axes: left of the points in the right half, right of the others."""
    lo, hi = ax.get_xlim()
    log = ax.get_xscale() == "log"
    for r, (px, py) in zip(rows, points):
        middle = math.sqrt(lo * hi) if log else (lo + hi) / 2
        right = px > middle
        text = ax.annotate(_label(r), (px, py), textcoords="offset points", xytext=(-5 if right else 5, 3),
                           ha="right" if right else "left", va="bottom", fontsize=7)
        text.set_in_layout(False)


def _label(row: Row) -> str:
    """A grid variant by its overrides (the name after the spec's), one per line; a trial by its name."""
    return row.variant.split("--", 1)[1].replace("--", "\n") if "--" in row.variant else row.variant


def cmd_leaderboard(args: argparse.Namespace) -> int:
    board = write_leaderboard(Path(args.dir), args.sort, args.x)
    print(board.markdown, end="")
    print(f"wrote {board.csv_path}, {board.md_path}" + (f", {board.png_path}" if board.png_path else ""))
    for line in board.problems:
        print(line, file=sys.stderr)
    return 2 if board.problems else 0


