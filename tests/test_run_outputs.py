"""What a run leaves behind and how it selects: run.json + load_run, the validation split,
best.safetensors, early stopping, subsets, and resuming a finished run with more epochs."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_trainer import DIGITS_SPEC, config

from builder.lang.loading import load_spec
from training import train
from training.checkpoint import CHECKPOINT, load_checkpoint, load_weights
from training.config import DigitsData, EarlyStopping
from training.data import load_data
from training.errors import RunDirError, TrainingInterrupted
from training.runfiles import read_metrics
from training.runinfo import BEST, load_run


@pytest.fixture
def spec_path(write_spec: Callable[..., Path]) -> Path:
    return write_spec(DIGITS_SPEC)


@torch.inference_mode()
def accuracy(run_dir: Path, weights: str, images: torch.Tensor, labels: torch.Tensor) -> float:
    loaded = load_run(run_dir, weights)  # type: ignore[arg-type]
    return float((loaded.model(loaded.preprocess(images)).argmax(1) == labels).float().mean())


def test_a_run_describes_itself_and_load_run_reproduces_its_test_accuracy(spec_path: Path, tmp_path: Path) -> None:
    spec, cfg = load_spec(spec_path), config(spec_path, epochs=2)
    result = train(spec, cfg, out=tmp_path / "r", quiet=True, log=print)
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    data = load_data(cfg.dataset, spec)
    assert info["classes"] == [str(i) for i in range(10)] and info["input"] == {"channels": 1, "height": 8, "width": 8}
    assert info["preprocess"]["mean"] == list(data.mean) and info["preprocess"]["std"] == list(data.std)
    loaded = load_run(tmp_path / "r", "final")
    assert not loaded.model.training and loaded.classes == tuple(info["classes"])
    test = data.test
    assert test is not None
    assert accuracy(tmp_path / "r", "final", test.images, test.labels) == pytest.approx(result.test_acc)  # type: ignore[attr-defined]
    assert accuracy(tmp_path / "r", "best", test.images, test.labels) == pytest.approx(result.best_test_acc)  # type: ignore[attr-defined]
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["best"]["epoch"] == result.best_epoch and results["final"]["test_acc"] == result.test_acc
    with pytest.raises(RunDirError, match="is not a run directory"):
        load_run(tmp_path)


def test_validation_metrics_every_epoch_and_never_the_test_split(spec_path: Path, tmp_path: Path) -> None:
    result = train(load_spec(spec_path), config(spec_path, epochs=3, eval_every=3), out=tmp_path / "r", quiet=True,
                   log=print)
    rows = read_metrics(tmp_path / "r" / "metrics.csv")
    assert all(r["val_acc"] is not None and r["val_loss"] is not None for r in rows)  # every epoch
    assert [r["test_acc"] is not None for r in rows] == [False, False, True]
    assert result.best_epoch == 1 + max(range(3), key=lambda i: (float(rows[i]["val_acc"]), -i))


def test_best_weights_are_the_weights_of_the_best_validation_epoch(spec_path: Path, tmp_path: Path) -> None:
    spec, cfg = load_spec(spec_path), config(spec_path, epochs=3, monitor="val_loss")
    at_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def keep_weights(line: str) -> None:  # each epoch's line follows its checkpoint
        if line.startswith("epoch "):
            epoch = int(line.split()[1].split("/")[0])
            at_epoch[epoch] = load_checkpoint(tmp_path / "straight" / CHECKPOINT)["model"]

    result = train(spec, cfg, out=tmp_path / "straight", quiet=True, log=keep_weights)
    losses = [m.val_loss or 0.0 for m in result.history]
    assert result.best_epoch == losses.index(min(losses)) + 1
    kept = load_weights(tmp_path / "straight" / BEST)
    at_best = at_epoch[result.best_epoch]
    assert kept.keys() == at_best.keys() and all(torch.equal(kept[k], at_best[k]) for k in kept)

    def stop_after_1(line: str) -> None:
        if line.startswith("epoch 1/"):
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(TrainingInterrupted):  # stopped and resumed: the same best weights and epoch
        train(spec, cfg, out=tmp_path / "split", quiet=True, log=stop_after_1)
    resumed = train(spec, cfg, resume=tmp_path / "split", quiet=True, log=print)
    again = load_weights(tmp_path / "split" / BEST)
    assert resumed.best_epoch == result.best_epoch and all(torch.equal(kept[k], again[k]) for k in kept)


def expected_stop(values: list[float], patience: int, min_delta: float, higher: bool) -> int:
    """The epoch early stopping ends at, recomputed from the metric's history."""
    best, stall = values[0], 0
    for epoch, v in enumerate(values[1:], start=2):
        if (v > best + min_delta) if higher else (v < best - min_delta):
            best, stall = v, 0
        else:
            stall += 1
            if stall >= patience:
                return epoch
    return len(values)


@pytest.mark.slow
@pytest.mark.parametrize(("metric", "patience", "min_delta"), [("val_acc", 1, 1.0), ("val_loss", 1, 0.02)])
def test_early_stopping_stops_at_the_right_epoch(
    spec_path: Path, tmp_path: Path, metric: str, patience: int, min_delta: float
) -> None:
    spec = load_spec(spec_path)
    full = train(spec, config(spec_path, epochs=5), out=tmp_path / "full", quiet=True, log=print)
    values = [getattr(m, metric) for m in full.history]
    stop = expected_stop(values, patience, min_delta, metric == "val_acc")
    rule = EarlyStopping(metric=metric, patience=patience, min_delta=min_delta)  # type: ignore[arg-type]
    result = train(spec, config(spec_path, epochs=5, early_stopping=rule), out=tmp_path / "es", quiet=True, log=print)
    assert result.epoch == stop and result.stopped_early == (stop < 5)
    assert result.test_acc is not None and len(read_metrics(tmp_path / "es" / "metrics.csv")) == stop
    if metric == "val_acc":
        assert stop == 2  # nothing can improve accuracy by 1.0


def test_train_size_and_test_size_take_stratified_subsets(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    data = load_data(DigitsData(kind="digits", train_size=200, test_size=50), spec)
    assert data.val is not None and data.test is not None
    assert (len(data.train) + len(data.val), len(data.val), len(data.test)) == (200, 20, 50)
    counts = torch.bincount(torch.cat([data.train.targets, data.val.targets]), minlength=10)
    assert int(counts.min()) >= 19 and int(counts.max()) <= 21  # 20 per class, stratified
    again = load_data(DigitsData(kind="digits", train_size=200, test_size=50), spec)
    assert torch.equal(again.train.targets, data.train.targets)


def test_a_finished_run_resumed_with_more_epochs_starts_a_new_schedule_segment(
    spec_path: Path, tmp_path: Path
) -> None:
    spec = load_spec(spec_path)
    train(spec, config(spec_path, epochs=2), out=tmp_path / "r", quiet=True, log=print)
    lines: list[str] = []
    train(spec, config(spec_path, epochs=4), resume=tmp_path / "r", quiet=True, log=lines.append)
    assert "the run had finished, so epochs 3-4 follow a new cosine schedule from lr 0.1" in lines[0]
    lrs = [float(r["lr"]) for r in read_metrics(tmp_path / "r" / "metrics.csv")]
    assert lrs[1] < 0.001  # the first schedule ended near zero
    assert lrs[2] == pytest.approx(0.1 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 10 / 22)).item()), rel=1e-4)
    assert lrs[3] < 0.001  # the new segment decays to its end over epochs 3-4
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["position"]["segment"] == 2
