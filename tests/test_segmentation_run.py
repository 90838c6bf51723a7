"""Segmentation end to end from a spec file: a tiny spec-built U-Net trained on the synthetic
shapes (best weights and early stopping by val_miou, exact resume, TensorBoard's picture), then
evaluate's report, predict's masks (the model's argmax or threshold, at any size the spec takes,
padded and cropped back), ONNX at two input sizes, load_run, the leaderboard and search."""

from __future__ import annotations

import csv
import json
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from builder.lang.loading import load_spec
from builder.lang.spec import Spec
from builder.model.build import build_model
from training import TrainingConfig, segment_image, train
from training.checkpoint import CHECKPOINT, WEIGHTS, load_weights, save_weights
from training.data import load_data
from training.errors import TrainingInterrupted
from training.evaluation import evaluate_split
from training.runfiles import BEST, read_metrics
from training.runinfo import load_run
from training.segment import Sizes, divisor, model_batch
from training.tasks.make import run_task
from training.trainer import Position

Cli = Callable[..., tuple[int, str, str]]

# Two U-Net levels (divisor 4): conv, skip(pool, conv, skip(...), up-conv), conv; 3,xxx parameters.
UNET_TINY = """\
name: unet_tiny
input: {{channels: 3, height: 16, width: 16}}
num_classes: {classes}
templates:
  conv:
    params: [f]
    block: {{out_channels: $f, kernel_size: 3, padding: 1, bias: false, norm: {{kind: batchnorm}}}}
  level:
    params: [f, inner]
    block:
      kind: sequence
      blocks:
        - {{kind: use, template: conv, args: {{f: $f}}}}
        - kind: skip
          body:
            - {{kind: maxpool, kernel_size: 2, stride: 2}}
            - $inner
            - {{kind: conv_transpose, out_channels: $f, kernel_size: 2, stride: 2}}
        - {{kind: use, template: conv, args: {{f: $f}}}}
blocks:
  - kind: use
    template: level
    args:
      f: 4
      inner: {{kind: use, template: level, args: {{f: 8, inner: {{out_channels: 8, kernel_size: 3, padding: 1}}}}}}
head: {{kind: dense}}
training:
  dataset: {dataset}
  epochs: 3
  batch_size: 8
  optimizer: {{kind: adam, lr: 0.01}}
  threads: 1
"""
SHAPES = "{kind: shapes, num_classes: 3, train_size: 24, test_size: 8, augment: {hflip: true, rotate: 10}}"


def unet_spec(path: Path, dataset: str = SHAPES, classes: int = 3) -> Path:
    path.write_text(UNET_TINY.format(dataset=dataset, classes=classes))
    return path


def config_of(spec: Spec, **changes: object) -> TrainingConfig:
    return TrainingConfig.model_validate({**(spec.training or {}), **changes})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch run of the tiny U-Net on shapes (module-wide: evaluate, predict, export read it)."""
    root = tmp_path_factory.mktemp("seg")
    spec = load_spec(unet_spec(root / "unet_tiny.yaml"))
    train(spec, config_of(spec), out=root / "run", quiet=True, log=lambda _: None)
    return root / "run"


# --- training ---------------------------------------------------------------------------------


def test_the_best_weights_are_the_best_val_miou_epochs(run_dir: Path) -> None:
    rows = read_metrics(run_dir / "metrics.csv")
    assert {"train_miou", "val_miou", "val_dice", "test_miou"} <= set(rows[0])
    val = [float(r["val_miou"]) for r in rows]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best"]["monitor"] == "val_miou" and results["best"]["epoch"] == val.index(max(val)) + 1
    run = load_run(run_dir, "best")
    spec, task = run.spec, run_task(run)
    data = load_data(config_of(spec).dataset, spec)
    assert data.val is not None
    prep = run.preprocess.batch_preprocess(None, torch.device("cpu"))
    _, metrics = evaluate_split(run.model, prep, data.val, task, batch_size=8, precision="fp32",
                                device=torch.device("cpu"))
    assert metrics["miou"] == pytest.approx(results["best"]["value"], abs=1e-12)  # best.safetensors is that epoch's
    assert results["best"]["value"] == pytest.approx(max(val), abs=1e-6)  # metrics.csv has 6 decimals


def test_early_stopping_by_val_miou(tmp_path: Path) -> None:
    spec = load_spec(unet_spec(tmp_path / "s.yaml"))
    config = config_of(spec, epochs=6, early_stopping={"patience": 1, "min_delta": 0.9})
    assert config.early_stopping is not None and config.early_stopping.metric == "val_miou"
    result = train(spec, config, out=tmp_path / "r", quiet=True, log=lambda _: None)
    assert result.stopped_early and result.epoch == 2  # a gain of 0.9 mIoU in one epoch: never


def test_an_interrupted_unet_run_resumes_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(unet_spec(tmp_path / "s.yaml"))
    config = config_of(spec, epochs=2)
    train(spec, config, out=tmp_path / "straight", quiet=True, log=lambda _: None)
    add, steps = Position.add, {"n": 0}

    def add_then_signal(self: Position, *args: float) -> None:
        add(self, *args)  # type: ignore[arg-type]
        steps["n"] += 1
        if steps["n"] == 3 + 1:  # 22 training images, batch 8: 3 steps per epoch
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Position, "add", add_then_signal)
    with pytest.raises(TrainingInterrupted):
        train(spec, config, out=tmp_path / "split", quiet=True, log=lambda _: None)
    assert not (tmp_path / "split" / WEIGHTS).exists() and (tmp_path / "split" / CHECKPOINT).exists()
    monkeypatch.setattr(Position, "add", add)
    train(spec, config, resume=tmp_path / "split", quiet=True, log=lambda _: None)
    for name in (WEIGHTS, BEST):
        a, b = (load_weights(tmp_path / run / name) for run in ("straight", "split"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    untimed = [[{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / n / "metrics.csv")]
               for n in ("straight", "split")]
    assert untimed[0] == untimed[1]


def test_tensorboard_shows_image_mask_and_prediction_each_epoch(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    board.Reload()
    assert {"val/miou", "val/dice", "train/miou"} <= set(board.Tags()["scalars"])
    pictures = board.Images("val/predictions")
    assert [p.step for p in pictures] == [1, 2, 3]
    # the 2 validation images (of 24), one row each (16 px, 2 px between), of image | truth | prediction
    assert (pictures[0].height, pictures[0].width) == (2 * 16 + 2, 3 * 16 + 2 * 2)


def test_a_classification_dataset_with_the_unet_spec_is_one_line(tmp_path: Path, cli: Cli) -> None:
    path = unet_spec(tmp_path / "s.yaml", "{kind: fake, train_size: 16, test_size: 8}")
    code, _, err = cli("train", path, "--out", tmp_path / "run", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "outputs (8, 3, 16, 16) (per pixel: use a segmentation dataset)" in err


# --- evaluate ---------------------------------------------------------------------------------


def test_evaluate_writes_the_segmentation_report(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "eval"
    code, stdout, _ = cli("evaluate", run_dir, "--out", out)
    assert code == 0 and "mIoU" in stdout
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png", "worst.png"):
        assert (out / name).is_file(), name
    result = json.loads((out / "metrics.json").read_text())
    best = json.loads((run_dir / "results.json").read_text())["best"]
    assert result["miou"] == pytest.approx(best["test_miou"], abs=1e-12)  # as the trainer measured it
    with (out / "per_class.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["background", "disc", "square"] and {"iou", "dice"} <= set(rows[0])
    scores = [w["miou"] for w in result["worst"]]
    assert len(scores) == 8 and scores == sorted(scores)  # the 8 test images, worst first


# --- predict ----------------------------------------------------------------------------------


def shapes_pngs(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """RGB PNGs of random pixels at the given (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"img{i}.png"
        Image.fromarray(gen.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def expected_mask(run_dir: Path, path: Path, step: int) -> np.ndarray:
    """The model's argmax (threshold for one channel) on the image, normalized as in training,
    zero-padded to multiples of `step`, cropped back: computed here, independently of predict."""
    run = load_run(run_dir)
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
    mean, std = (np.asarray(v, dtype=np.float32) for v in (run.preprocess.mean, run.preprocess.std))
    x = torch.from_numpy((image - mean) / std).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    x = F.pad(x, (0, -w % step, 0, -h % step))
    with torch.no_grad():
        logits = run.model(x)[0, :, :h, :w]
    return (logits[0] > 0).long().numpy() if logits.shape[0] == 1 else logits.argmax(0).numpy()


def test_predict_writes_the_models_argmax_at_any_size_the_spec_takes(run_dir: Path, tmp_path: Path,
                                                                        cli: Cli) -> None:
    # ten 16x16 images: one decoded group, run through the model in two batches of the recipe's 8
    files = shapes_pngs(tmp_path / "in", [(16, 16), (13, 21), (16, 16), (40, 9)] + [(16, 16)] * 8)
    code, stdout, err = cli("predict", run_dir, tmp_path / "in", "-o", tmp_path / "out", "--workers", "0")
    assert code == 0 and err == "" and "wrote" in stdout
    assert divisor(load_run(run_dir).spec) == (4, 4) and model_batch(load_run(run_dir)) == 8
    fractions = {r["path"]: r for r in csv.DictReader((tmp_path / "out" / "fractions.csv").open(newline=""))}
    for path in files:
        mask = Image.open(tmp_path / "out" / f"{path.stem}_mask.png")
        assert mask.mode == "P" and mask.size == Image.open(path).size
        found, want = np.asarray(mask), expected_mask(run_dir, path, 4)
        assert np.array_equal(found, want), path.name
        row = fractions[str(path)]
        assert [float(row[c]) for c in ("background", "disc", "square")] == pytest.approx(
            [float((want == c).mean()) for c in range(3)], abs=1e-6)
        overlay = Image.open(tmp_path / "out" / f"{path.stem}_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == mask.size
    run = load_run(run_dir)
    assert torch.equal(segment_image(run, files[1]), torch.from_numpy(expected_mask(run_dir, files[1], 4)))
    assert run.classes == ("background", "disc", "square") and run.palette is not None and len(run.palette) == 3


def test_predict_refuses_to_replace_its_outputs_without_force(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    shapes_pngs(tmp_path / "in", [(16, 16)])
    assert cli("predict", run_dir, tmp_path / "in", "-o", tmp_path / "out")[0] == 0
    code, _, err = cli("predict", run_dir, tmp_path / "in", "-o", tmp_path / "out")
    assert code == 2 and "exists; pass --force to replace it" in err and len(err.strip().splitlines()) == 1
    assert cli("predict", run_dir, tmp_path / "in", "-o", tmp_path / "out", "--force")[0] == 0


def hand_made_run(root: Path, spec_text: str) -> Path:
    """A run directory written as the trainer writes one, with the spec's seed-0 weights (no training)."""
    from training.rundir import write_run_files
    from training.runinfo import write_run_info
    from training.tasks.make import make_task

    (root / "spec.yaml").write_text(spec_text)
    spec = load_spec(root / "spec.yaml")
    config = TrainingConfig.model_validate(spec.training or {})
    data = load_data(config.dataset, spec)
    run = root / "run"
    run.mkdir()
    write_run_files(run, spec, config)
    write_run_info(run, spec, data, make_task(config, data.classes))
    torch.manual_seed(0)
    save_weights(build_model(spec), run / WEIGHTS, {"spec": spec.name})
    return run


def test_a_one_channel_run_writes_the_threshold(tmp_path: Path, cli: Cli) -> None:
    text = UNET_TINY.format(dataset="{kind: shapes, num_classes: 2, train_size: 8, test_size: 4}", classes=1)
    run = hand_made_run(tmp_path, text)
    (path,) = shapes_pngs(tmp_path / "in", [(10, 14)])
    assert cli("predict", run, path, "-o", tmp_path / "out")[0] == 0
    found = np.asarray(Image.open(tmp_path / "out" / "img0_mask.png"))
    assert set(np.unique(found)) <= {0, 1} and np.array_equal(found, expected_mask(run, path, 4))


def test_a_size_the_spec_cannot_take_is_one_line(tmp_path: Path, cli: Cli) -> None:
    text = """\
name: fixed
input: {channels: 3, height: 16, width: 16}
num_classes: 3
blocks:
  - {out_channels: 4, kernel_size: 3, stride: 2, padding: 1}
  - {kind: upsample, size: [16, 16]}
head: {kind: dense}
training:
  dataset: {kind: shapes, num_classes: 3, train_size: 8, test_size: 4}
"""
    run = hand_made_run(tmp_path, text)
    shapes_pngs(tmp_path / "in", [(16, 16), (20, 20)])
    code, _, err = cli("predict", run, tmp_path / "in", "-o", tmp_path / "out")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "img1.png: 20x20 does not fit fixed: a dense head predicts every input pixel" in err
    assert (tmp_path / "out" / "img0_mask.png").is_file() and not (tmp_path / "out" / "img1_mask.png").exists()
    assert isinstance(Sizes.of(load_run(run).spec).padded(20, 20), str)


# --- export -----------------------------------------------------------------------------------


def test_onnx_has_a_dynamic_height_and_width_checked_at_two_sizes(run_dir: Path, tmp_path: Path, cli: Cli) -> None:
    import onnxruntime as ort

    code, stdout, _ = cli("export", run_dir, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert code == 0 and "dynamic batch, height and width" in stdout and "at 16x16 and 20x20" in stdout
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    model = load_run(run_dir).model
    for shape in ((2, 3, 16, 16), (1, 3, 24, 40)):
        x = torch.randn(*shape)
        with torch.no_grad():
            want = model(x)
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        assert got.shape == want.shape and float((got - want).abs().max()) <= 1e-4


# --- leaderboard and search -------------------------------------------------------------------


def test_the_leaderboard_ranks_segmentation_variants_by_val_miou(run_dir: Path, tmp_path: Path) -> None:
    import shutil

    from builder.tools.leaderboard import write_leaderboard

    sweep = tmp_path / "sweep"
    for name, values in (("low", [0.2, 0.3]), ("high", [0.5, 0.4])):
        shutil.copytree(run_dir, sweep / name, ignore=shutil.ignore_patterns("tensorboard"))
        rows = read_metrics(sweep / name / "metrics.csv")[:2]
        for row, value in zip(rows, values):
            row["val_miou"] = str(value)
        with (sweep / name / "metrics.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    board = write_leaderboard(sweep)
    assert [(r.variant, r.best_val_acc, r.val_metric) for r in board.rows] == [
        ("high", 0.5, "val_miou"), ("low", 0.3, "val_miou")]
    assert "best val mIoU" in board.markdown and "| 0.5000 |" in board.markdown


def test_a_search_maximizes_the_specs_monitored_metric(tmp_path: Path) -> None:
    from builder.tools.search import SearchMetricError, search_metric
    from builder.tools.search_config import SearchConfig

    spec = load_spec(unet_spec(tmp_path / "s.yaml"))
    search = SearchConfig.model_validate({"params": {"training.optimizer.lr": {"kind": "float", "low": 0.001,
                                                                                "high": 0.1}}})
    assert search_metric(search, config_of(spec)) == "val_miou"
    assert search_metric(search.model_copy(update={"metric": "test_dice"}), config_of(spec)) == "test_dice"
    with pytest.raises(SearchMetricError, match="unknown metric 'val_acc': the segmentation task logs val_loss"):
        search_metric(search.model_copy(update={"metric": "val_acc"}), config_of(spec))
