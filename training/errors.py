"""The trainer's clean failures: each prints as plain lines and exits with its own status. No torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path as FsPath

from builder.lang.errors import BuilderError, Problem, format_path


class ConfigProblems(BuilderError):
    """Problems with fields of the spec or its training config, found once training starts
    (a dataset that is missing, a device that is absent, a resume that changes the recipe).

    Paths are document paths like ('training', 'dataset', 'root'); the CLI locates them in
    the file or flag that set them.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{format_path(p.path)}: {p.message}" for p in self.problems))

    @classmethod
    def at(cls, path: tuple[str | int, ...], message: str) -> ConfigProblems:
        return cls([Problem(path, message)])

    def lines(self) -> list[str]:
        return [f"error: {format_path(p.path)}: {p.message}" for p in self.problems]


class RunDirError(BuilderError):
    """The output directory cannot be used (it holds another run, or cannot be created)."""


class ApiError(BuilderError):
    """A Python API call with an argument of the wrong type or value."""


class TrainUsageError(BuilderError):
    """A command line that cannot name a run (no SPEC and no --resume)."""


class CheckpointError(BuilderError):
    """A checkpoint that is missing, damaged, or refused because it would run code."""


class BadImageError(BuilderError):
    """An image file that cannot be decoded. Takes one message, so it survives DataLoader workers."""

    def lines(self) -> list[str]:
        # From a worker the message is torch's report with a traceback; its last line is ours.
        last = str(self).strip().splitlines()[-1]
        return [f"error: {last.split('BadImageError: ', 1)[-1]}"]


class NonFiniteLoss(BuilderError):
    """The loss became nan or inf: the run stops, keeping the last good checkpoint."""

    exit_code = 1


class DistEnvError(BuilderError):
    """A launcher variable (WORLD_SIZE, RANK, LOCAL_RANK, BUILDER_DIST_TIMEOUT) that is malformed."""


class TrainingFailed(BuilderError):
    """The run cannot go on (under torchrun: another process of the job died or went silent)."""

    exit_code = 1


class QuietExit(BuilderError):
    """A failure another rank reports: this rank only exits with the same status."""

    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__("")

    def lines(self) -> list[str]:
        return []


class TrainingInterrupted(BuilderError):
    """A stop signal: the step finished and a checkpoint was written (or, with `saved` None, the
    run stopped at once or before it began: `saved` says what is left). Exit 128 + signal."""

    def __init__(self, signal_name: str, signal_number: int, where: str, run_dir: FsPath | None,
                 saved: str | None = "") -> None:
        self.signal_name, self.where, self.run_dir, self.saved = signal_name, where, run_dir, saved
        self.exit_code = 128 + signal_number
        self.resume_command = f"training.train(spec, config, resume={str(run_dir)!r})"
        super().__init__(f"interrupted by {signal_name} {where}")

    def lines(self) -> list[str]:
        if self.run_dir is None:
            return [f"interrupted by {self.signal_name} {self.where}; nothing was trained, nothing to resume"]
        if self.saved is None:
            return [f"interrupted by {self.signal_name} {self.where}; no checkpoint was written, nothing to resume"]
        saved = self.saved or f"checkpoint saved in {self.run_dir}"
        return [f"interrupted by {self.signal_name} {self.where}; {saved}", f"resume with: {self.resume_command}"]


class RunFileError(RunDirError):
    """A file of a run directory that is missing, not a regular file, too large or malformed."""
