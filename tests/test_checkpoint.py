"""Checkpoints: atomic writes, weights_only loading that refuses code, RNG round trips, safetensors."""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import pytest
import torch
from torch import nn

from builder.lang.files import atomic_write
from training.checkpoint import (
    load_checkpoint,
    load_weights,
    rng_states,
    save_checkpoint,
    save_weights,
    set_rng_states,
)
from training.errors import CheckpointError

Cli = Callable[..., tuple[int, str, str]]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, lambda f: f.write(b"old"))

    def crash(f: IO[bytes]) -> None:
        f.write(b"half of the new")
        raise KeyboardInterrupt  # a kill in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temp file left behind
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"


def test_a_checkpoint_round_trips_tensors_and_plain_data(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(3.0)}, "position": {"epoch": 2, "history": [{"lr": 0.1}]}, "t": (1, "a")}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert loaded["position"] == state["position"] and loaded["t"] == (1, "a")


class Payload:
    """Unpickling this would run a shell command."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("touch PWNED",)


def test_a_checkpoint_holding_arbitrary_objects_is_refused_not_executed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "cnn-builder-checkpoint", "version": 1, "evil": Payload()}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"refused .*c\.pt: it holds pickled objects") as exc:
        load_checkpoint(tmp_path / "c.pt")
    assert "GLOBAL posix.system" in str(exc.value) and "Check the documentation" not in str(exc.value)
    (tmp_path / "raw.pt").write_bytes(pickle.dumps(Payload()))  # a plain pickle, not a zip archive
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(tmp_path / "raw.pt")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no checkpoint at"),
        (b"PK\x03\x04 truncated", "damaged or not a checkpoint"),
        ({"model": {}}, "not a checkpoint of this trainer"),
        ({"format": "cnn-builder-checkpoint", "version": 99}, "has checkpoint version 99"),
    ],
)
def test_missing_damaged_or_foreign_checkpoints_are_clear_errors(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "c.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_rng_states_survive_a_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_states()})
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    set_rng_states(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]


def test_weights_are_the_state_dict_under_its_own_keys(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).to(memory_format=torch.channels_last)
    save_weights(model, tmp_path / "model.safetensors", {"spec": "x"})
    weights = load_weights(tmp_path / "model.safetensors")
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_weights(tmp_path / "bad.safetensors")


def test_the_cli_refuses_to_resume_from_a_pickle_that_runs_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_spec: Callable[..., Path], cli: Cli
) -> None:
    spec = write_spec(
        "name: s\ninput: {channels: 1, height: 8, width: 8}\nnum_classes: 10\n"
        "blocks: [{out_channels: 4, kernel_size: 3}]\nclassifier: {hidden: []}\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "cnn-builder-checkpoint", "version": 1, "rng": Payload()}, run / "checkpoint.pt")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", spec, "--resume", run)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"error: refused {run}/checkpoint.pt: it holds pickled objects")
    assert not (tmp_path / "PWNED").exists()
