"""samples: a run's own test images as PNG files that predict reads back as the labels say;
masks' classes for segmentation; the output rule; CSV cells escaped against formulas."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_trainer import DIGITS_SPEC

from training.tasks.base import escape_cell, table_text

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from builder.tools.cli import main

    root = tmp_path_factory.mktemp("samples")
    (root / "tiny.yaml").write_text(DIGITS_SPEC)
    assert main(["train", str(root / "tiny.yaml"), "--epochs", "1", "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def test_samples_are_the_test_splits_images_with_their_classes(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    from training.runinfo import load_run
    from training.samples import sample_split

    code, out, _ = cli("samples", run_dir, "-o", tmp_path / "photos", "--count", "5")
    assert code == 0 and "wrote 5 images" in out
    rows = list(csv.DictReader((tmp_path / "photos" / "samples.csv").open()))
    assert [r["file"] for r in rows] == [f"{i:04d}.png" for i in range(5)]
    run = load_run(run_dir)
    images, labels = next(iter(sample_split(run).batches([torch.arange(5)])))
    for row, image, label in zip(rows, images, labels):
        saved = np.asarray(Image.open(tmp_path / "photos" / row["file"]))
        assert np.array_equal(saved, image[0].numpy()) and row["true"] == run.classes[int(label)]
    code, out, _ = cli("predict", run_dir, tmp_path / "photos")
    assert code == 0 and out.count(".png") == 5


def test_a_segmentation_runs_samples_list_the_classes_in_each_mask(tmp_path: Path, cli: Cli) -> None:
    from test_segmentation_run import config_of, unet_spec

    from builder.lang.loading import load_spec
    from training.trainer import train

    spec = load_spec(unet_spec(tmp_path / "unet.yaml"))
    train(spec, config_of(spec, epochs=1), out=tmp_path / "run", quiet=True, log=lambda _: None)
    assert cli("samples", tmp_path / "run", "-o", tmp_path / "photos", "--count", "3")[0] == 0
    rows = list(csv.DictReader((tmp_path / "photos" / "samples.csv").open()))
    assert len(rows) == 3 and all(r["true"].split()[0] == "background" for r in rows)
    assert Image.open(tmp_path / "photos" / "0000.png").size == (16, 16)


def test_existing_images_are_kept_without_force(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0001.png").write_text("mine")
    code, _, err = cli("samples", run_dir, "-o", photos)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert (photos / "0001.png").read_text() == "mine" and not (photos / "0000.png").exists()
    assert cli("samples", run_dir, "-o", photos, "--force")[0] == 0
    assert (photos / "0001.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "{run}/extra"], "inside the run directory"),
    (["-o", "{file}"], "not a directory"),
    (["-o", "{tmp}/p", "--count", "0"], "--count"),
    (["-o", "{tmp}/p", "--count", "1000001"], "--count"),
])
def test_bad_samples_arguments_are_one_line(args: list[str], message: str, run_dir: Path, tmp_path: Path,
                                            cli: Cli) -> None:
    (tmp_path / "f").write_text("x")
    filled = [a.format(run=run_dir, file=tmp_path / "f", tmp=tmp_path) for a in args]
    code, _, err = cli("samples", run_dir, *filled)
    assert code == 2 and message in err and "Traceback" not in err


def test_a_directory_that_is_no_run_is_one_line(tmp_path: Path, cli: Cli) -> None:
    code, _, err = cli("samples", tmp_path, "-o", tmp_path / "p")
    assert code == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"x\")", "+1", "-2+3", "@SUM(A1)", "\tx"])
def test_csv_text_that_would_be_a_formula_is_escaped(cell: str) -> None:
    assert escape_cell(cell) == "'" + cell
    back = list(csv.reader(table_text(["name"], [[cell], [0.5], ["cat"]]).splitlines(keepends=True)))
    assert back == [["name"], ["'" + cell], ["0.5"], ["cat"]]
    assert escape_cell(-0.5) == -0.5 and escape_cell("cat") == "cat"
