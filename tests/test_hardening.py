"""Run directories are never lost or mixed; checkpoints are verified; a non-finite evaluation stops."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from test_trainer import DIGITS_SPEC, config

from builder.lang.loading import load_spec
from training import train
from training.errors import RunDirError
from training.rundir import LOCK, claim_run_dir

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def spec_path(write_spec: Callable[..., Path]) -> Path:
    return write_spec(DIGITS_SPEC)


def test_a_second_run_into_a_locked_directory_is_refused(spec_path: Path, tmp_path: Path, cli: Cli) -> None:
    run = tmp_path / "r"
    run.mkdir()
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds it
    try:
        code, _, stderr = cli("train", spec_path, "--out", run, "--epochs", "1")
        assert code == 2 and stderr.strip() == (
            f"error: {run} is in use by another run (it holds {run / LOCK}); wait for it to end, "
            "or choose another --out"
        )
    finally:
        os.close(fd)
    assert cli("train", spec_path, "--out", run, "--epochs", "1", "--quiet")[0] == 0  # released: it runs


def test_default_names_are_unique_within_one_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("training.rundir.time.strftime", lambda fmt: "20250101-120000")
    first, second = claim_run_dir(None, "x"), claim_run_dir(None, "x")
    assert first == (Path("runs/x-20250101-120000"), True) and second == (Path("runs/x-20250101-120000-2"), True)
    assert first[0].is_dir() and second[0].is_dir()


def test_out_onto_a_folder_of_other_files_is_refused_and_left_alone(
    spec_path: Path, tmp_path: Path, cli: Cli
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, stderr = cli("train", spec_path, "--out", mine, "--epochs", "1")
    assert code == 2 and stderr.strip() == (
        f"error: --out {mine} is not empty and holds no run of this trainer; its files are never overwritten: "
        "choose another --out, or empty it"
    )
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


def test_a_failed_start_leaves_no_directory_and_resume_removes_partial_files(
    spec_path: Path, tmp_path: Path
) -> None:
    spec = load_spec(spec_path)
    with pytest.raises(RunDirError):  # refused before anything is written
        train(spec, config(spec_path, epochs=1), out=tmp_path / "r", resume=tmp_path / "other")
    assert not (tmp_path / "r").exists()
    train(spec, config(spec_path, epochs=1), out=tmp_path / "r", quiet=True, log=print)
    partial = tmp_path / "r" / ".checkpoint.pt.0123456789ab.tmp"  # what a killed checkpoint write leaves
    partial.write_bytes(b"half")
    (tmp_path / "r" / ".user.tmp").write_bytes(b"not ours")
    train(spec, config(spec_path, epochs=2), resume=tmp_path / "r", quiet=True, log=print)
    assert not partial.exists() and (tmp_path / "r" / ".user.tmp").exists()



def test_a_flipped_bit_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    import torch

    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.errors import CheckpointError

    marker = torch.arange(1000, dtype=torch.float32) + 0.5
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {"w": marker}, "position": {"epoch": 3}})
    assert torch.equal(load_checkpoint(path)["model"]["w"], marker)
    data = bytearray(path.read_bytes())
    at = data.find(marker.numpy().tobytes()[:64])
    assert at > 0
    data[at + 101] ^= 0x04  # one bit of the tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged: its contents do not match its checksum"):
        load_checkpoint(path)


def test_a_non_finite_evaluation_stops_with_exit_1_keeping_the_last_good_checkpoint(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.checkpoint import CHECKPOINT, load_checkpoint
    from training.errors import NonFiniteLoss
    from training.trainer import Trainer

    real = Trainer.evaluate
    calls = {"n": 0}

    def poisoned(self: Trainer, split: object) -> tuple[float | None, float | None]:
        loss, acc = real(self, split)  # type: ignore[arg-type]
        calls["n"] += 1
        return (float("nan"), acc) if calls["n"] == 3 else (loss, acc)  # epoch 2's validation

    monkeypatch.setattr(Trainer, "evaluate", poisoned)
    with pytest.raises(NonFiniteLoss) as stopped:
        train(load_spec(spec_path), config(spec_path, epochs=2), out=tmp_path / "r", quiet=True, log=print)
    assert stopped.value.exit_code == 1
    assert str(stopped.value).startswith("the validation loss is nan after epoch 2: training diverged; the last good")
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["position"]["epoch"] == 1  # epoch 2 was never kept


def test_threads_apply_for_the_run_and_are_restored(spec_path: Path, tmp_path: Path) -> None:
    import torch

    before, seen = torch.get_num_threads(), []
    train(load_spec(spec_path), config(spec_path, epochs=1, threads=1), out=tmp_path / "r", quiet=True,
          log=lambda line: seen.append(torch.get_num_threads()))
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_sighup_in_training_checkpoints_and_exits_129(spec_path: Path, tmp_path: Path) -> None:
    import signal

    from training.errors import TrainingInterrupted

    def log(line: str) -> None:
        if line.startswith("epoch 1/"):
            signal.raise_signal(signal.SIGHUP)

    with pytest.raises(TrainingInterrupted) as stopped:
        train(load_spec(spec_path), config(spec_path, epochs=3), out=tmp_path / "r", quiet=True, log=log)
    assert stopped.value.exit_code == 129 and "after epoch 1; checkpoint saved" in stopped.value.lines()[0]


def test_a_signal_during_start_up_stops_at_once_and_leaves_nothing(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from training import trainer
    from training.errors import TrainingInterrupted

    def slow_load(*args: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(trainer, "load_data", slow_load)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(load_spec(spec_path), config(spec_path, epochs=1), out=tmp_path / "r", quiet=True, log=print)
    assert stopped.value.exit_code == 143
    assert stopped.value.lines() == ["interrupted by SIGTERM during start-up; nothing was trained, nothing to resume"]
    assert not (tmp_path / "r").exists()


def test_a_second_signal_stops_at_once_and_names_the_last_checkpoint(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from training.errors import TrainingInterrupted
    from training.trainer import Position

    add, steps = Position.add, {"n": 0}

    def add_then_signal_twice(self: Position, *args: float) -> None:
        add(self, *args)  # type: ignore[arg-type]
        steps["n"] += 1
        if steps["n"] == 11 + 2:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Position, "add", add_then_signal_twice)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(load_spec(spec_path), config(spec_path, epochs=3), out=tmp_path / "r", quiet=True, log=print)
    first, hint = stopped.value.lines()
    last = f"the last checkpoint (after epoch 1) is in {tmp_path / 'r'}"
    assert first == f"interrupted by SIGINT again: stopped at once; {last}"
    assert hint.startswith("resume with: ")


def test_a_signal_during_the_last_evaluation_still_leaves_the_weights(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from training.checkpoint import WEIGHTS
    from training.trainer import Trainer

    real, calls = Trainer.evaluate, {"n": 0}

    def signalled(self: Trainer, split: object) -> tuple[float | None, float | None]:
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2 (the last): its validation
            signal.raise_signal(signal.SIGTERM)
        return real(self, split)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "evaluate", signalled)
    result = train(load_spec(spec_path), config(spec_path, epochs=2), out=tmp_path / "r", quiet=True, log=print)
    assert result.epoch == 2 and (tmp_path / "r" / WEIGHTS).is_file()


def test_one_host_synchronization_per_training_step(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from training import trainer
    from training.step import TrainStep

    reads, inside, synced = [0], [False], []
    real_total, real_call, real_item = trainer.total_of, TrainStep.__call__, torch.Tensor.item

    def counted_total(*args: object) -> list[float]:
        reads[0] += 1
        return real_total(*args)  # type: ignore[arg-type]

    def step(self: TrainStep, *args: object) -> object:
        inside[0] = True
        try:
            return real_call(self, *args)  # type: ignore[arg-type]
        finally:
            inside[0] = False

    def item(self: torch.Tensor) -> object:
        if inside[0]:
            synced.append("item")
        return real_item(self)

    monkeypatch.setattr(trainer, "total_of", counted_total)
    monkeypatch.setattr(TrainStep, "__call__", step)
    monkeypatch.setattr(torch.Tensor, "item", item)
    train(load_spec(spec_path), config(spec_path, epochs=1), out=tmp_path / "r", quiet=True, log=print)
    assert reads[0] == 11 and synced == []  # 11 steps: one combined read each, no .item() in the step


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_checkpoint(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    import errno

    from builder.lang import files
    from training.checkpoint import CHECKPOINT, load_checkpoint

    real, calls = files.os.replace, {"n": 0}

    def full(src: str, dst: str) -> None:
        if str(dst).endswith(CHECKPOINT):
            calls["n"] += 1
            if calls["n"] == 2:  # the checkpoint after epoch 2
                raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", full)
    code, _, stderr = cli("train", spec_path, "--epochs", "3", "--out", tmp_path / "r", "--quiet")
    assert code == 2 and stderr.strip() == (
        f"error: cannot write {tmp_path / 'r' / CHECKPOINT}: No space left on device; the previous version is intact"
    )
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["position"]["epoch"] == 1
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("spec.yaml", None), "train: spec must be a Spec (builder.load_spec(path)), not str"),
        ((None, {"epochs": 1}),
         "train: config must be a TrainingConfig (TrainingConfig.model_validate(mapping)), not dict"),
    ],
)
def test_the_python_api_checks_its_arguments(spec_path: Path, args: tuple[object, object], message: str) -> None:
    from training.config import TrainingConfig
    from training.errors import ApiError

    spec, cfg = args
    with pytest.raises(ApiError) as exc:
        train(spec if spec is not None else load_spec(spec_path),  # type: ignore[arg-type]
              cfg if cfg is not None else TrainingConfig())  # type: ignore[arg-type]
    assert str(exc.value) == message
    with pytest.raises(ApiError, match="train: out must be a non-empty path"):
        train(load_spec(spec_path), TrainingConfig(), out="")


def test_an_unusable_out_is_one_line(spec_path: Path, tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "file").write_text("x")
    code, _, stderr = cli("train", spec_path, "--out", tmp_path / "file" / "run", "--epochs", "1")
    assert code == 2 and stderr.strip().startswith(f"error: cannot create the output directory {tmp_path}/file/run:")
    code, _, stderr = cli("train", spec_path, "--out", tmp_path / "file", "--epochs", "1")
    assert code == 2 and stderr.strip() == f"error: --out {tmp_path / 'file'} is a file, not a directory"
