"""The run directory's contract: the name of every file in it, how each is written and read back,
a run's status, and the check that a resumed run is the run its checkpoint holds.

    RUN_DIR/spec.yaml           the resolved spec with its training section, as last trained
            run.json            classes, input shape and eval preprocessing (runinfo.run_info)
            summary.txt         torchinfo's table
            checkpoint.pt       everything a resume needs (training/checkpoint.py)
            model.safetensors   final weights; best.safetensors: the best validation epoch's
            metrics.csv         one row per epoch (training.tasks.columns)
            events.jsonl        what the trainer reports for tools: start, epoch, end, interrupted
            results.json        the test metrics of the final and the best weights
            curves.png, tensorboard/, evaluate-WEIGHTS[-N]/ (evaluate's reports)
            .lock               held by the run writing into the directory
            variant.json, train.log   a sweep's record of the run and the child's output

Every reader checks what it reads: a regular file (a FIFO, a device or a link to /dev/zero is
refused on the open descriptor, never read), at most a stated size, and contents of the right
types, ranges and sizes that agree with each other, the spec and the weights. Each failure is
one RunFileError or CheckpointError line (exit 2). Torch-free at import: the sweep and the
leaderboard read run directories without torch; checkpoints import it when they are read.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from builder.lang.errors import BuilderError, Problem
from builder.lang.files import TMP_NAME, write_bytes, write_text
from builder.lang.yaml_io import MAX_DEPTH
from training.errors import CheckpointError, ConfigProblems, RunFileError

if TYPE_CHECKING:
    from torch import Tensor, nn

    from builder.lang.spec import Spec
    from training.config import TrainingConfig

# --- names ---------------------------------------------------------------------------------------

SPEC_FILE = "spec.yaml"
RUN_INFO = "run.json"
SUMMARY = "summary.txt"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"  # the final weights
BEST = "best.safetensors"  # the best validation epoch's
WEIGHT_FILES = {"final": WEIGHTS, "best": BEST}
METRICS = "metrics.csv"
EVENTS = "events.jsonl"
RESULTS = "results.json"
CURVES = "curves.png"
BOARD_DIR = "tensorboard"
LOCK = ".lock"
RECORD = "variant.json"  # builder sweep's record of a variant's run
LOG = "train.log"  # builder sweep: the child's stdout and stderr
REPORT = "evaluate-{weights}"  # evaluate's default report folder inside the run (then -2, -3, ...)
RUN_FILES = frozenset({SPEC_FILE, RUN_INFO, SUMMARY, CHECKPOINT, WEIGHTS, BEST, METRICS, EVENTS, RESULTS, CURVES,
                       LOCK, RECORD, LOG})  # regular files; BOARD_DIR is the one directory
TMP_FILE = TMP_NAME  # what atomic_write leaves when killed
MARKERS = ((RUN_INFO,), (CHECKPOINT,), (RECORD,), (LOCK, SPEC_FILE))  # any one set makes a directory a run's
FORMAT = "cnn-builder-run"

# --- limits (docs/reliability.md) ------------------------------------------------------------------

MAX_JSON_BYTES = 4 * 2**20  # run.json, variant.json, results.json: a few KB (ImageNet-21k's classes: ~300 KB)
MAX_TABLE_BYTES = 64 * 2**20  # metrics.csv, events.jsonl: ~100 bytes per epoch
MAX_CLASSES = 100_000
MAX_NAME = 1024  # characters of a class name (file names have at most 255 bytes)
MAX_SIDE = 65_536  # input height and width
MAX_CHANNELS = 64
MAX_COLUMNS = 256
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
_NUMBER = re.compile(r"^-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")  # what write_metrics writes
_COLUMN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")  # a key of a spec or config mapping
M = TypeVar("M", bound=BaseModel)


class MissingFile(RunFileError):
    """A run file that does not exist."""


# --- reading files -------------------------------------------------------------------------------


@contextmanager
def open_regular(path: Path, error: type[BuilderError] = RunFileError) -> Iterator[IO[bytes]]:
    """`path` opened for reading once it is known to be a regular file, checked on the open
    descriptor (non-blocking), so a FIFO, device or socket, or a link to one, is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except FileNotFoundError:
        raise (MissingFile if error is RunFileError else error)(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a pipe, device or socket"
            raise error(f"{path} is not a regular file ({kind}); run files are read from regular files only")
        os.set_blocking(fd, True)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def read_bytes(path: Path, limit: int, error: type[BuilderError] = RunFileError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (counted as read: stat is not trusted)."""
    chunks, size = [], 0
    with open_regular(path, error) as f:
        try:
            while size <= limit and (chunk := f.read(min(limit + 1 - size, 2**24))):
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    data = b"".join(chunks)
    if len(data) > limit:
        raise error(f"{path} is larger than {_size(limit)}; not a file this trainer writes")
    return data


def read_text(path: Path, limit: int) -> str:
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path} is not UTF-8 text (bad byte at offset {exc.start})") from None


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> Any:
    """One JSON value; NaN and Infinity, which this program never writes, are refused."""
    return _json(read_text(path, limit), str(path))


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise RunFileError(f"{where} is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise RunFileError(f"{where} is not valid JSON ({str(exc).splitlines()[0][:200]})") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number this program writes")


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit:,} bytes"


def validated(model: type[M], data: Any, where: str, error: type[BuilderError] = RunFileError) -> M:
    """`data` as `model`, or one line naming the first problem's field (never the value)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{where}: {first_problem(exc)}") from None


def first_problem(exc: ValidationError) -> str:
    """`FIELD.PATH: message (and N more problems)`, one line."""
    problems = exc.errors()
    first = problems[0]
    field = shown(".".join(str(p) for p in first["loc"]))
    message = str(first["msg"]).removeprefix("Value error, ")
    more = len(problems) - 1
    return (f"{field}: " if field else "") + message + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def shown(text: str, limit: int = 120) -> str:
    """A name read from a file, as one short line of a message (non-printable characters escaped)."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**53)]


# --- run.json --------------------------------------------------------------------------------------


class InputInfo(BaseModel):
    model_config = _STRICT
    channels: Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
    height: Annotated[int, Field(ge=1, le=MAX_SIDE)]
    width: Annotated[int, Field(ge=1, le=MAX_SIDE)]


class PreprocessInfo(BaseModel):
    """Exactly what EvalPreprocess does: PIL convert(mode), bilinear resize, x/255, (x - mean) / std."""

    model_config = _STRICT
    mode: Literal["L", "RGB"]
    resize: Literal["bilinear"]
    scale: Finite
    mean: Annotated[list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]],
                    Field(min_length=1, max_length=MAX_CHANNELS)]
    std: Annotated[list[Annotated[float, Field(ge=1e-3, le=1, allow_inf_nan=False)]],  # the data's floor is 1e-3
                   Field(min_length=1, max_length=MAX_CHANNELS)]

    @model_validator(mode="after")
    def _scale(self) -> PreprocessInfo:
        if abs(self.scale - 1 / 255) > 1e-12:
            raise ValueError("scale must be 1/255 (the value training used)")
        return self


ClassName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class RunInfo(BaseModel):
    """run.json. Keys beyond these are a task's description of its outputs (training/tasks)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    format: Literal["cnn-builder-run"]
    version: Literal[1]
    spec: Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
    dataset: Annotated[str, Field(max_length=MAX_NAME)]
    task: Annotated[str, Field(max_length=64)] = "classification"
    classes: Annotated[list[ClassName], Field(min_length=1, max_length=MAX_CLASSES)]
    input: InputInfo
    preprocess: PreprocessInfo
    palette: list[Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]] | None = None
    """segmentation: an RGB colour per class, for mask PNGs and overlays."""
    ignore_index: Annotated[int, Field(ge=0, le=255)] | None = None
    """segmentation: the mask value that is no class."""

    @model_validator(mode="after")
    def _agree(self) -> RunInfo:
        from training.tasks import TASKS

        channels, p = self.input.channels, self.preprocess
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}")
        if self.palette is not None and len(self.palette) != len(self.classes):
            raise ValueError(f"palette needs one colour per class ({len(self.classes)})")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes has a name twice")
        if len(p.mean) != channels or len(p.std) != channels:
            raise ValueError(f"preprocess mean and std need one value per input channel ({channels})")
        if p.mode != ("L" if channels == 1 else "RGB"):
            raise ValueError(f"preprocess mode {p.mode} does not decode to {channels} channels")
        return self


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """run.json, checked as read_run_info checks it (what is written is read back)."""
    validated(RunInfo, info, f"{run_dir / RUN_INFO} (being written)")
    write_text(run_dir / RUN_INFO, json.dumps(info, indent=2) + "\n")


def read_run_info(run_dir: Path, spec: Spec | None = None) -> dict[str, Any]:
    """run.json of a run directory, checked (and against `spec`, the run's spec.yaml, when given)."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_INFO
    if not run_dir.is_dir():
        raise RunFileError(f"{run_dir} is not a directory")
    try:
        info = read_json(path)
    except MissingFile:
        raise RunFileError(f"{run_dir} is not a run directory (it has no {RUN_INFO}; train writes one)") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise RunFileError(f"{path} is not the run description of this trainer")
    validated(RunInfo, info, str(path))
    if spec is not None:
        check_info_fits(info, spec, path)
    return info


def check_info_fits(info: dict[str, Any], spec: Spec, path: Path) -> None:
    """run.json must describe the spec's model: its input shape and its number of outputs."""
    shape = info["input"]
    want = {"channels": spec.input.channels, "height": spec.input.height, "width": spec.input.width}
    for key, value in want.items():
        if shape[key] != value:
            raise RunFileError(f"{path}: input.{key} is {shape[key]} but the run's spec.yaml says {value}")
    named = len(info["classes"])
    binary = info.get("task") == "segmentation" and spec.num_classes == 1  # one logit: background or not
    if named != spec.num_classes and not (binary and named == 2):
        raise RunFileError(f"{path}: classes names {named} classes but the run's spec.yaml has "
                           f"num_classes {spec.num_classes}")


# --- metrics.csv ---------------------------------------------------------------------------------------

Row = dict[str, Any]  # column -> int (epoch), float, or None (not evaluated)


def write_metrics(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """metrics.csv from the whole history (so a resumed run's file is whole too)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _cell(row[c]) for c in columns])
    write_bytes(path, buffer.getvalue().encode())


def _cell(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"


def read_metrics(path: Path, required: bool = True) -> list[Row]:
    """metrics.csv's rows: `epoch` an int (1, 2, ... in order), every other cell a finite float or
    None. A missing file is [] unless `required`."""
    try:
        text = read_text(path, MAX_TABLE_BYTES)
    except MissingFile:
        if required:
            raise
        return []
    try:
        table = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise RunFileError(f"{path} is not a CSV table ({exc})") from None
    if not table:
        raise RunFileError(f"{path} is empty: it has no header row")
    header = _header(table[0], path)
    return [_row(cells, header, path, n) for n, cells in enumerate(table[1:], start=2)]


def _header(names: list[str], path: Path) -> list[str]:
    if len(names) > MAX_COLUMNS or len(set(names)) != len(names) or "epoch" not in names:
        raise RunFileError(f"{path}: the header is not metrics.csv's (at most {MAX_COLUMNS} distinct columns, "
                           "one of them epoch)")
    bad = next((i for i, name in enumerate(names) if not _COLUMN.match(name)), None)
    if bad is not None:
        raise RunFileError(f"{path}: column {bad + 1} of the header is not a metric name")
    return names


def _row(cells: list[str], header: list[str], path: Path, line: int) -> Row:
    if len(cells) != len(header):
        raise RunFileError(f"{path}:{line}: {len(cells)} cells, but the header has {len(header)} columns")
    row: Row = {}
    for name, cell in zip(header, cells):
        if cell == "":
            row[name] = None
        elif not _NUMBER.match(cell) or not math.isfinite(value := float(cell)):
            raise RunFileError(f"{path}:{line}: {name} is not a finite number")
        else:
            row[name] = value
    epoch = row["epoch"]
    if epoch != line - 1:
        raise RunFileError(f"{path}:{line}: epoch must be {line - 1} (rows are epochs 1, 2, ... in order)")
    row["epoch"] = int(epoch)
    return row


# --- events.jsonl --------------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = _STRICT
    time: Annotated[float, Field(ge=0, allow_inf_nan=False)]  # seconds since the epoch


class StartEvent(_Event):
    """A start or a resume: the epoch it starts after, and the split sizes (images)."""

    event: Literal["start"]
    resumed: bool
    epoch: Count
    epochs: Annotated[int, Field(ge=1, le=10**9)]
    train_images: Count
    val_images: Count | None
    test_images: Count | None
    steps_per_epoch: Count
    device: Annotated[str, Field(max_length=64)]
    precision: Annotated[str, Field(max_length=16)]


class EpochEvent(_Event):
    """An epoch's row is in metrics.csv (written before this event)."""

    event: Literal["epoch"]
    epoch: Annotated[int, Field(ge=1, le=10**9)]
    epochs: Annotated[int, Field(ge=1, le=10**9)]


class EndEvent(_Event):
    """The run is complete: final weights and results.json are written."""

    event: Literal["end"]
    epoch: Count
    best_epoch: Count
    stopped_early: bool


class InterruptedEvent(_Event):
    """A stop signal: the checkpoint of `where` is kept."""

    event: Literal["interrupted"]
    signal: Annotated[str, Field(max_length=16)]
    where: Annotated[str, Field(max_length=200)]


Event = StartEvent | EpochEvent | EndEvent | InterruptedEvent
_EVENT: TypeAdapter[Event] = TypeAdapter(Annotated[Event, Field(discriminator="event")])
MAX_EVENTS = 1_000_000


def _event(data: Any, where: str) -> Event:
    try:
        return _EVENT.validate_python(data)
    except ValidationError as exc:
        raise RunFileError(f"{where}: {first_problem(exc)}") from None


def new_event(kind: str, **fields: Any) -> dict[str, Any]:
    """An event as plain data: {"event": kind, "time": now, **fields} (checked as read_events checks it)."""
    data = {"event": kind, "time": round(time.time(), 3), **fields}
    _event(data, f"{EVENTS} (being written)")
    return data


def write_events(run_dir: Path, events: Sequence[dict[str, Any]]) -> None:
    """events.jsonl, one JSON object a line, rewritten whole (atomically) at each event."""
    write_text(run_dir / EVENTS, "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))


def read_events(run_dir: Path) -> list[Event]:
    """The run's events in order ([] for a run from before events.jsonl)."""
    path = run_dir / EVENTS
    try:
        text = read_text(path, MAX_TABLE_BYTES)
    except MissingFile:
        return []
    lines = text.split("\n")
    if lines[-1] != "":
        raise RunFileError(f"{path}: the last line is incomplete")
    if len(lines) > MAX_EVENTS:
        raise RunFileError(f"{path} holds more than {MAX_EVENTS:,} events")
    return [_event(_json(line, f"{path}:{n}"), f"{path}:{n}") for n, line in enumerate(lines[:-1], start=1)]


def event_data(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Events back to the plain data write_events writes (a resumed run appends to them)."""
    return [e.model_dump() for e in events]


# --- variant.json (builder sweep) -------------------------------------------------------------------


class Record(BaseModel):
    """What builder sweep writes about a variant's run; the leaderboard reads it."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    name: Annotated[str, Field(max_length=1000)] = ""
    group: Annotated[str, Field(max_length=1000)] | None = None
    spec: Annotated[str, Field(max_length=4096)] = ""
    overrides: Annotated[list[Annotated[str, Field(max_length=100_000)]], Field(max_length=10_000)] = []
    status: Literal["running", "done", "failed", "interrupted", "pruned", "skipped"] = "running"
    reason: Annotated[str, Field(max_length=100_000)] = ""


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """variant.json, atomically (a sweep killed mid-write leaves the old one)."""
    write_text(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """variant.json, checked; None when the directory has none."""
    path = run_dir / RECORD
    try:
        data = read_json(path)
    except MissingFile:
        return None
    if not isinstance(data, dict):
        raise RunFileError(f"{path} is not a sweep record (a JSON object)")
    validated(Record, data, str(path))
    return data


# --- results.json --------------------------------------------------------------------------------------


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    write_text(run_dir / RESULTS, json.dumps(results, indent=2) + "\n")


# --- run status ---------------------------------------------------------------------------------------

RunStatus = Literal["new", "started", "interrupted", "done"]


def run_status(run_dir: Path, epochs: int | None = None) -> RunStatus:
    """done: final weights and an `end` event for at least `epochs` epochs (or stopped early);
    interrupted: a checkpoint to resume from; started: a start's files without a checkpoint;
    new: nothing of a run (a missing or empty directory, or only a sweep's record and log)."""
    if not run_dir.is_dir():
        return "new"
    if finished(run_dir, epochs):
        return "done"
    if _regular(run_dir / CHECKPOINT):
        return "interrupted"
    started = any(e.name in RUN_FILES - {LOCK, RECORD, LOG} or e.name == BOARD_DIR for e in run_dir.iterdir())
    return "started" if started else "new"


def finished(run_dir: Path, epochs: int | None = None) -> bool:
    """Whether the run is complete (for `epochs` epochs, when given)."""
    if not _regular(run_dir / WEIGHTS):
        return False
    if not (run_dir / EVENTS).exists():  # a run from before events.jsonl: its rows count
        return epochs is None or len(read_metrics(run_dir / METRICS, required=False)) >= epochs
    last = next((e for e in reversed(read_events(run_dir)) if isinstance(e, StartEvent | EndEvent)), None)
    if not isinstance(last, EndEvent):
        return False
    return epochs is None or last.epoch >= epochs or last.stopped_early


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def is_own_entry(entry: os.DirEntry[str]) -> bool:
    """Whether a directory entry is one a run of this trainer writes (by name and kind; links are not)."""
    if entry.name == BOARD_DIR:
        return entry.is_dir(follow_symlinks=False)
    own = entry.name in RUN_FILES or TMP_FILE.match(entry.name) is not None
    return own and entry.is_file(follow_symlinks=False)


def foreign_entries(run_dir: Path) -> list[str]:
    """The names in `run_dir` that no run of this trainer writes (sorted)."""
    with os.scandir(run_dir) as entries:
        return sorted(e.name for e in entries if not is_own_entry(e))


# --- the resume check ------------------------------------------------------------------------------

DocPath = tuple[str | int, ...]


def spec_data(spec: Spec) -> dict[str, Any]:
    """The model part of a spec (what the weights depend on), as plain data."""
    return spec.model_dump(mode="json", exclude={"training", "extends"})


def recipe_changes(saved_spec: Any, saved_config: Any, spec: Spec, config: TrainingConfig,
                   ignored: frozenset[str] | None = None) -> list[tuple[DocPath, Any, Any]]:
    """Where this spec and recipe differ from a run's (training.* fields in `ignored`, by default
    RESUMABLE_CHANGES, do not count)."""
    from training.config import RESUMABLE_CHANGES

    ignored = RESUMABLE_CHANGES if ignored is None else ignored
    found = list(differences(saved_spec, spec_data(spec)))
    found += [(("training", *path), old, new)
              for path, old, new in differences(saved_config, config.model_dump(mode="json"))
              if path[0] not in ignored]
    return found


def check_resume(saved: dict[str, Any], spec: Spec, config: TrainingConfig, run_dir: Path) -> None:
    """The spec and the recipe must be the run's (only RESUMABLE_CHANGES may differ)."""
    why = f"in the run being resumed ({run_dir}); a resumed run keeps its spec and recipe"
    found = recipe_changes(saved["spec"], saved["config"], spec, config)
    problems = [Problem(p, f"is {json.dumps(new)} here but {json.dumps(old)} {why}") for p, old, new in found]
    done = saved["position"]["epoch"]
    if config.epochs < done:
        problems.append(Problem(("training", "epochs"), f"the run being resumed already did {done} epochs"))
    if problems:
        raise ConfigProblems(problems)


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


# --- checkpoints ----------------------------------------------------------------------------------------

STATE_KEYS = frozenset({"spec", "config", "position", "model", "optimizer", "scheduler", "scaler", "rng"})
CHECKPOINT_KEYS = STATE_KEYS | {"format", "version"}  # the checksum is verified and dropped on loading
EMA_KEY = "ema"  # the weight average's tensors: in the checkpoint of a run with training.ema, only there
MAX_PLAIN_DEPTH = MAX_DEPTH  # spec and config in a checkpoint: no deeper than a spec.yaml may be


class PositionState(BaseModel):
    """A checkpoint's position (trainer.Position as plain data)."""

    model_config = _STRICT
    epoch: Count
    step: Count
    loss_sum: Finite
    tally: Annotated[list[Finite], Field(max_length=2**20)]
    seen: Count
    seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    lr: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    history: list[dict[Annotated[str, Field(pattern=_COLUMN.pattern)], Finite | None]]
    best_epoch: Count
    best_value: Finite | None
    stall_value: Finite | None
    stall: Count
    segment: Count
    step_losses: list[Finite]


def position_state(state: Any, where: str) -> dict[str, Any]:
    """A checkpoint's position, checked; from before the task seam, `correct` becomes the tally."""
    if isinstance(state, dict) and "correct" in state and "tally" not in state:
        correct = state["correct"]
        state = {k: v for k, v in state.items() if k != "correct"}
        state["tally"] = [float(correct)] if type(correct) in (int, float) else correct  # else refused below
    validated(PositionState, state, f"{where}: position", CheckpointError)
    return dict(state)


def check_checkpoint(state: dict[str, Any], path: Path) -> None:
    """The keys a checkpoint has; plain spec and config; the position, its history and the RNG states."""
    from training.config import TrainingConfig

    extra = sorted(map(str, state.keys() - CHECKPOINT_KEYS - {EMA_KEY}))
    missing = sorted(CHECKPOINT_KEYS - state.keys())
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}: not a complete checkpoint")
    if extra:
        raise CheckpointError(f"{path} holds unexpected keys ({shown(', '.join(extra))}): not a checkpoint of "
                              "this trainer")
    for key in ("spec", "config"):
        if not isinstance(state[key], dict) or not _plain(state[key], MAX_PLAIN_DEPTH):
            raise CheckpointError(f"{path}: {key} is not plain data (a mapping of numbers, strings and lists)")
    config = validated(TrainingConfig, state["config"], f"{path}: config", CheckpointError)
    state["config"] = config.model_dump(mode="json")  # as the trainer wrote it: defaults filled in
    if (config.ema is not None) != (EMA_KEY in state):
        raise CheckpointError(f"{path} {'lacks' if config.ema is not None else 'holds'} the weight average (ema) "
                              f"of a run {'with' if config.ema is not None else 'without'} training.ema")
    state["position"] = position_state(state["position"], str(path))
    _check_history(state["position"], config, path)
    for key in ("model", "optimizer", "scheduler", "scaler"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{path}: {key} is not a mapping of states")
    check_rng(state["rng"], path)


def _plain(value: Any, depth: int) -> bool:
    if depth < 0:
        return False
    if isinstance(value, dict):  # keys are field names: they are shown in messages
        return all(isinstance(k, str) and _FIELD.fullmatch(k) is not None and _plain(v, depth - 1)
                   for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v, depth - 1) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _check_history(pos: dict[str, Any], config: TrainingConfig, path: Path) -> None:
    """The history is one row per epoch done, of the task's columns; the bests are among them."""
    from training.tasks import task_kind

    columns = set(task_kind(config.dataset.task).columns)
    history, epoch = pos["history"], pos["epoch"]
    if len(history) != epoch:
        raise CheckpointError(f"{path}: position.history has {len(history)} rows for {epoch} epochs")
    for i, row in enumerate(history, start=1):
        if set(row) != columns:
            raise CheckpointError(f"{path}: position.history[{i - 1}] does not have the task's columns "
                                  f"({', '.join(sorted(columns))})")
        if row["epoch"] != i:
            raise CheckpointError(f"{path}: position.history[{i - 1}].epoch must be {i}")
        row["epoch"] = i  # an int, as the trainer wrote it
    for key in ("best_epoch", "segment"):
        if pos[key] > epoch:
            raise CheckpointError(f"{path}: position.{key} ({pos[key]}) is after the epochs done ({epoch})")


def check_rng(rng: Any, path: Path) -> None:
    """Every RNG state is one its generator accepts: tried on scratch generators, never the global ones."""
    import random

    import numpy as np
    import torch

    if not isinstance(rng, dict) or set(rng) != {"torch", "cuda", "python", "numpy"}:
        raise CheckpointError(f"{path}: rng must hold the torch, cuda, python and numpy states")
    tries: dict[str, Callable[[Any], object]] = {
        "torch": lambda s: torch.Generator().set_state(_byte_tensor(s)),
        "cuda": _check_cuda_states,
        "python": lambda s: random.Random().setstate((s[0], tuple(s[1]), s[2])),
        "numpy": lambda s: np.random.RandomState().set_state(
            {**s, "state": {**s["state"], "key": np.array(_ints(s["state"]["key"], 624), dtype=np.uint32)}}),
    }
    for name, attempt in tries.items():
        try:
            attempt(rng[name])
        except Exception as exc:  # each generator refuses a bad state its own way
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
            raise CheckpointError(f"{path}: rng.{name} is not a state of its generator ({why})") from None


def _byte_tensor(value: Any) -> Tensor:
    import torch

    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
        raise TypeError("not a 1-D uint8 tensor")
    return value


def _ints(value: Any, count: int) -> list[int]:
    if not isinstance(value, list) or len(value) != count or not all(type(v) is int for v in value):
        raise TypeError(f"not a list of {count} integers")
    return value


def _check_cuda_states(states: Any) -> None:
    import torch

    if not isinstance(states, list):
        raise TypeError("not a list")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if states and available and len(states) > available:
        raise ValueError(f"{len(states)} states for {available} devices")
    for i, s in enumerate(states):
        _byte_tensor(s)
        if available and s.numel() != torch.cuda.get_rng_state(i).numel():
            raise ValueError(f"state {i} has {s.numel()} bytes")


def check_fits(saved: dict[str, Any], path: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
               steps: int, tally_size: int) -> None:
    """The checkpoint's states fit this run: the model's tensors (names, shapes, dtypes) and its
    weight average's, the optimizer's groups and per-parameter states, the schedule's and grad
    scaler's fields, the position."""
    check_tensors(saved["model"], model.state_dict(), f"{path}: model")
    if EMA_KEY in saved:
        check_tensors(saved[EMA_KEY], model.state_dict(), f"{path}: {EMA_KEY}")
    _check_optimizer(saved["optimizer"], optimizer, f"{path}: optimizer")
    same_structure(saved["scheduler"], scheduler.state_dict() if scheduler is not None else {}, f"{path}: scheduler")
    same_structure(saved["scaler"], scaler.state_dict(), f"{path}: scaler")
    pos = saved["position"]
    if pos["step"] >= steps:
        raise CheckpointError(f"{path}: position.step {pos['step']} is beyond an epoch of {steps} steps")
    if len(pos["tally"]) not in (0, tally_size):
        raise CheckpointError(f"{path}: position.tally has {len(pos['tally'])} counts; the task keeps {tally_size}")


def check_tensors(saved: Any, fresh: Mapping[str, Tensor], where: str) -> None:
    """The same names, each a tensor of the same shape and dtype."""
    import torch

    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} is not a mapping of tensors")
    extra, missing = sorted(map(str, saved.keys() - fresh.keys())), sorted(fresh.keys() - saved.keys())
    if extra or missing:
        names = shown(", ".join((extra or missing)[:3]))
        raise CheckpointError(f"{where} {'holds unexpected' if extra else 'lacks'} tensors ({names}): "
                              "the weights of another spec")
    for name, want in fresh.items():
        got = saved[name]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            shape = f"{got.dtype} {tuple(got.shape)}" if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"{where}: {shown(name)} is {shape}, not {want.dtype} {tuple(want.shape)}")


def _check_optimizer(saved: Any, optimizer: Any, where: str) -> None:
    """Groups as the optimizer's own (hyperparameters of the same types); per-parameter states
    (momentum, Adam's moments) of their parameter's shape."""
    import torch

    fresh = optimizer.state_dict()
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise CheckpointError(f"{where} must hold state and param_groups")
    same_structure(saved["param_groups"], fresh["param_groups"], f"{where}.param_groups", exact=("params",))
    shapes = {i: p.shape for group, fg in zip(optimizer.param_groups, fresh["param_groups"])
              for i, p in zip(fg["params"], group["params"])}
    if not isinstance(saved["state"], dict) or not saved["state"].keys() <= shapes.keys():
        raise CheckpointError(f"{where}.state is not keyed by the optimizer's parameters")
    for index, entry in saved["state"].items():
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where}.state[{index}] is not a mapping")
        for key, value in entry.items():
            if key == "step" and isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
                continue
            if not isinstance(value, torch.Tensor) or value.shape != shapes[index] or not value.is_floating_point():
                raise CheckpointError(f"{where}.state[{index}].{shown(str(key))} is not a float tensor of its "
                                      f"parameter's shape {tuple(shapes[index])}")


def same_structure(saved: Any, fresh: Any, where: str, exact: tuple[str, ...] = ()) -> None:
    """`saved` has `fresh`'s structure: the same keys and lengths, and at the leaves values of the
    same kind (bool, number (finite), string, None, tensor of the same shape and dtype); the keys
    in `exact` must hold equal values."""
    import torch

    kind = _kind(fresh)
    if _kind(saved) != kind:
        raise CheckpointError(f"{where} is {_kind(saved)}, not {kind}")
    if isinstance(fresh, dict):
        if set(saved) != set(fresh):
            odd = sorted(map(str, set(saved) ^ set(fresh)))[:3]
            raise CheckpointError(f"{where} does not have the expected fields (differs in {shown(', '.join(odd))})")
        for key, value in fresh.items():
            if key in exact and saved[key] != value:
                raise CheckpointError(f"{where}.{key} is not this run's")
            same_structure(saved[key], value, f"{where}.{key}", exact)
    elif isinstance(fresh, list | tuple):
        if len(saved) != len(fresh):
            raise CheckpointError(f"{where} has {len(saved)} items, not {len(fresh)}")
        for i, (a, b) in enumerate(zip(saved, fresh)):
            same_structure(a, b, f"{where}[{i}]", exact)
    elif isinstance(fresh, torch.Tensor) and (saved.shape != fresh.shape or saved.dtype != fresh.dtype):
        raise CheckpointError(f"{where} is a {saved.dtype} tensor {tuple(saved.shape)}, not {fresh.dtype} "
                              f"{tuple(fresh.shape)}")
    elif kind == "a number" and not (math.isfinite(saved) and abs(saved) <= 2**53):
        raise CheckpointError(f"{where} is not a finite number")


def _kind(value: Any) -> str:
    import torch

    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, torch.Tensor):
        return "a tensor"
    for types, name in ((dict, "a mapping"), ((list, tuple), "a list"), (str, "a string"), (type(None), "None")):
        if isinstance(value, types):
            return name
    return type(value).__name__


# --- evaluate's report folder ------------------------------------------------------------------------


@contextmanager
def report_dir(run_dir: Path, weights: str, out: Path | None) -> Iterator[Path]:
    """The folder a report is written into, claimed for this process: the default
    RUN_DIR/evaluate-WEIGHTS[-N] is created new (mkdir is atomic: two evaluations get two folders);
    an explicit `out` must be empty or new, and is locked while the report is written. A folder
    created here that is still empty when the report fails is removed."""
    path, created = (_new_dir(run_dir / REPORT.format(weights=weights)), True) if out is None else _dir(out)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunFileError(f"--out {path} is in use by another evaluate; choose another --out") from None
        if any(path.iterdir()):
            raise RunFileError(f"--out {path} is not empty; evaluate never overwrites files: choose a new directory")
        ok = False
        try:
            yield path
            ok = True
        finally:
            if not ok and created and not any(path.iterdir()):
                path.rmdir()
    finally:
        os.close(fd)


def _new_dir(base: Path) -> Path:
    path, n = base, 2
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
        except OSError as exc:
            raise RunFileError(f"cannot create {path}: {exc.strerror or exc}") from None


def _dir(path: Path) -> tuple[Path, bool]:
    try:
        path.mkdir(parents=True)
        return path, True
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise RunFileError(f"--out {path} is not a directory") from None
        return path, False
    except OSError as exc:
        raise RunFileError(f"cannot create {path}: {exc.strerror or exc}") from None


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run (finished, running, or a sweep's variant that has not started)."""
    return any(all((path / name).exists() for name in names) for names in MARKERS)


def enclosing_run(path: Path) -> Path | None:
    """The run directory that the directory `path` is, or lies directly in (RUN/tensorboard,
    RUN/evaluate-best...), or None."""
    return next((d for d in (path, path.parent) if is_run_dir(d)), None)
