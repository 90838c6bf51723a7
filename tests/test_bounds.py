"""Every number and device name is checked where it enters (docs/reliability.md, "Numbers and
devices"): one located line, exit 2, before any work; a sweep or search of more variants than
MAX_VARIANTS is refused at once with the count."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

Cli = Callable[..., tuple[int, str, str]]


def _one_line(cli: Cli, *args: object) -> str:
    code, out, err = cli(*args)
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


DEVICES = ["cuda:99", "meta", "bogus", "cpu:x", *([] if torch.cuda.is_available() else ["cuda"])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_choose_the_device_as_train_does(
    tmp_path: Path, cli: Cli, command: str, device: str
) -> None:
    args = ("evaluate", tmp_path) if command == "evaluate" else ("predict", tmp_path, tmp_path / "x.png")
    err = _one_line(cli, *args, "--device", device)
    assert err.startswith(f"error: --device {device}: ")
    assert ("not available here" in err) if device.startswith("cuda") else (
        "holds shapes but no values" in err if device == "meta" else "unknown device" in err)


@pytest.mark.parametrize(("args", "message"), [
    (("train", "lenet5", "--lr", "1e308"),
     "--lr 1e308: error: training.optimizer.lr: must be at most 1,000,000, got 1e308"),
    (("train", "lenet5", "--batch-size", "1000000"),
     "--batch-size 1000000: error: training.batch_size: must be at most 65,536, got 1000000"),
    (("sweep", "lenet5", "--seeds", "1000000000"),
     "--seeds 1000000000: error: must be from 1 to 1,000, got 1,000,000,000"),
    (("sweep", "lenet5", "--jobs", "0"), "--jobs 0: error: must be from 1 to 1,000, got 0"),
    (("sweep", "lenet5", "--trials", "x"), "--trials x: error: must be a whole number, got 'x'"),
    (("predict", "{tmp}", "x.png", "--workers", "1000000000"),
     "--workers 1000000000: error: must be from 0 to 64, got 1,000,000,000"),
    (("predict", "{tmp}", "x.png", "--workers", "-1"), "--workers -1: error: must be from 0 to 64, got -1"),
    (("predict", "{tmp}", "x.png", "--topk", "0"), "--topk 0: error: must be from 1 to 1,000, got 0"),
    (("summarize", "lenet5", "--device", "meta", "--batch-size", "1000000"),
     "--batch-size 1000000: error: must be from 1 to 65,536, got 1,000,000"),
    (("summarize", "lenet5", "--depth", "1000"), "--depth 1000: error: must be from 0 to 100, got 1,000"),
    (("bench", "lenet5", "--batch-size", "0"), "--batch-size 0: error: must be from 1 to 65,536, got 0"),
    (("train", "lenet5", "--set", "training.optimizer.weight_decay=1e308"),
     "training.optimizer.weight_decay: must be <= 1000000.0, got 1e+308"),
    (("train", "lenet5", "--set", "training.optimizer.lr=1e300"), "training.optimizer.lr: must be <= 1000000.0"),
])
def test_numbers_out_of_bounds_are_one_located_line(
    tmp_path: Path, cli: Cli, args: tuple[str, ...], message: str
) -> None:
    assert message in _one_line(cli, *(a.format(tmp=tmp_path) for a in args))
    assert not (tmp_path / "s").exists()


def test_a_sweep_validates_each_variants_flags_as_train_does(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("sweep", "lenet5", "--lr", "1e308", "--out", tmp_path / "s")
    assert code == 2
    assert "  --lr 1e308: error: training.optimizer.lr: must be at most 1,000,000, got 1e308" in err.splitlines()
    assert not (tmp_path / "s").exists()


def test_a_grid_of_millions_is_refused_at_once_with_its_count(tmp_path: Path, cli: Cli) -> None:
    widths = ",".join(str(0.1 + i / 1000) for i in range(2000))
    dropouts = ",".join(str(i / 10000) for i in range(2000))
    err = _one_line(cli, "sweep", "lenet5", "--grid", f"width={widths}", "--grid", f"classifier.dropout={dropouts}",
                    "--seeds", "2", "--out", tmp_path / "s")
    assert err == ("command line: error: 8,000,000 variants (1 spec x 2,000 width values x 2,000 classifier.dropout "
                   "values x 2 seeds); a sweep runs at most 10,000")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("section", "message"), [
    ("seeds: 5000", "seeds: must be <= 1000, got 5000"),
    ("search: {trials: 20000, params: {width: {kind: float, low: 0.5, high: 1.0}}}",
     "search.trials: must be <= 10000, got 20000"),
])
def test_a_sweep_file_is_bounded_as_the_command_line(
    write_spec: Callable[..., Path], cli: Cli, section: str, message: str
) -> None:
    sweep = write_spec(f"specs: [lenet5.yaml]\n{section}\n", "s.yaml")
    assert message in _one_line(cli, "sweep", sweep)
