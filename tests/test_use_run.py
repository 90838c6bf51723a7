"""Using a trained run: evaluate and predict agree with the trainer and with each other; bad
input is one line and exit 2; nothing in the run directory is overwritten."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.checkpoint import WEIGHTS

SPEC = """\
name: tiny_folder
input: {{channels: 1, height: 8, width: 8}}
num_classes: 10
defaults: {{norm: {{kind: batchnorm}}, pool: {{kind: max, kernel_size: 2, stride: 2}}}}
blocks:
  - {{out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}}
classifier: {{hidden: [32]}}
training:
  epochs: 2
  batch_size: 64
  optimizer: {{kind: sgd, lr: 0.1}}
  dataset: {{kind: image_folder, root: {root}, val_fraction: 0.2}}
"""

Cli = Callable[..., tuple[int, str, str]]


def digits_tree(root: Path) -> Path:
    """sklearn's digits as PNG files: root/{train,test}/<digit>/<i>.png (30 and 6 per class)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen: dict[int, int] = {}
    for image, label in zip(digits.images, digits.target):
        i = seen.get(int(label), 0)
        if i >= 36:
            continue
        seen[int(label)] = i + 1
        folder = root / ("train" if i < 30 else "test") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8), "L").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained run on the digits folder, shared by the tests (they never change it)."""
    from builder.tools.cli import main

    tmp = tmp_path_factory.mktemp("use")
    root = digits_tree(tmp / "digits")
    spec = tmp / "spec.yaml"
    spec.write_text(SPEC.format(root=root))
    assert main(["train", str(spec), "--out", str(tmp / "run"), "--quiet"]) == 0
    return tmp / "run"


def listing(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_evaluate_reports_what_the_trainer_reported(run: Path, tmp_path: Path, cli: Cli) -> None:
    before = listing(run)
    results = json.loads((run / "results.json").read_text())
    code, stdout, _ = cli("evaluate", run, "--weights", "final", "--out", tmp_path / "ev")
    assert code == 0 and "top-1" in stdout
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["top1"] == results["final"]["test_acc"]
    assert metrics["loss"] == pytest.approx(results["final"]["test_loss"], rel=1e-9)
    assert metrics["num_samples"] == 60 and 0 <= metrics["top5"] <= 1 and metrics["top5"] >= metrics["top1"]
    rows = list(csv.DictReader((tmp_path / "ev" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == [str(i) for i in range(10)] and all(r["support"] == "6" for r in rows)
    confusion = list(csv.reader((tmp_path / "ev" / "confusion.csv").open()))
    assert sum(int(c) for row in confusion[1:] for c in row[1:]) == 60
    diagonal = sum(int(confusion[i + 1][i + 1]) for i in range(10))
    assert diagonal / 60 == pytest.approx(metrics["top1"])
    for picture in ("confusion.png", "wrong.png"):
        assert (tmp_path / "ev" / picture).read_bytes()[:4] == b"\x89PNG"
    assert cli("evaluate", run)[0] == 0  # default: a new folder inside the run, nothing else touched
    after = listing(run)
    assert {k: v for k, v in after.items() if not k.startswith("evaluate-best")} == before
    assert any(k.startswith("evaluate-best/metrics.json") for k in after)


def test_predict_accuracy_over_a_folder_equals_evaluate_top1(run: Path, tmp_path: Path, cli: Cli) -> None:
    root = run.parent / "digits"  # the folder the run trained on
    assert cli("evaluate", run, "--data", f"image_folder:{root}", "--out", tmp_path / "ev")[0] == 0
    top1 = json.loads((tmp_path / "ev" / "metrics.json").read_text())["top1"]
    code, stdout, _ = cli("predict", run, root / "test", "--topk", "3", "-o", tmp_path / "p.csv")
    assert code == 0 and "wrote" in stdout
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 60 and {"path", "pred", "prob", "top2", "prob2", "top3", "prob3"} <= set(rows[0])
    hits = sum(Path(r["path"]).parent.name == r["pred"] for r in rows)
    assert hits / 60 == top1
    assert all(float(r["prob"]) >= float(r["prob2"]) >= float(r["prob3"]) for r in rows)


def test_predict_converts_rgba_and_skips_a_corrupt_image(run: Path, tmp_path: Path, cli: Cli) -> None:
    gray = run.parent / "digits" / "test" / "3" / "30.png"
    Image.open(gray).convert("RGBA").save(tmp_path / "rgba.png")
    Image.open(gray).convert("RGB").save(tmp_path / "rgb.jpg", quality=100)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    code, _, stderr = cli("predict", run, tmp_path, gray, "-o", tmp_path / "p.csv")
    assert code == 1 and "Traceback" not in stderr
    (line,) = stderr.strip().splitlines()
    assert line.startswith(f"skipped: {tmp_path / 'broken.png'}: cannot read image")
    rows = {Path(r["path"]).name: r["pred"] for r in csv.DictReader((tmp_path / "p.csv").open())}
    assert set(rows) == {"rgba.png", "rgb.jpg", "30.png"}
    assert rows["rgba.png"] == rows["30.png"]  # RGBA -> L as training converted it


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "{tmp}"], "is not a run directory"),
        (["predict", "{run}", "{tmp}/missing.png"], "missing.png: no such file or directory"),
        (["predict", "{run}", "{tmp}", "--topk", "0"], "--topk 0: error: must be from 1 to 1,000, got 0"),
        (["evaluate", "{run}", "--out", "{run}"], "is not empty; evaluate never overwrites files"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run: Path, tmp_path: Path, cli: Cli, args: list[str], message: str) -> None:
    code, _, stderr = cli(*[a.format(tmp=tmp_path, run=run) for a in args])
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_weights_of_another_spec_are_refused(run: Path, tmp_path: Path, cli: Cli) -> None:
    import shutil

    from safetensors.torch import save_file
    from torch import zeros

    from training.checkpoint import checksum

    other = tmp_path / "other"
    shutil.copytree(run, other)
    tensors = {"features.0.weight": zeros(1)}
    save_file(tensors, str(other / WEIGHTS), metadata={"checksum": checksum(tensors)})
    code, _, stderr = cli("evaluate", other, "--weights", "final")
    assert code == 2 and "holds weights of another spec" in stderr and len(stderr.strip().splitlines()) == 1
