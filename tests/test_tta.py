"""Test-time augmentation: the views, their weighted mean, and its use by the trainer and `evaluate`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_trainer import DIGITS_SPEC, config
from torch import Tensor

from builder.lang.loading import load_spec
from training import train
from training.config import TTAConfig
from training.errors import ConfigProblems
from training.runinfo import load_run
from training.tta import shifted, tta_forward, views


def reflect_shift(x: Tensor, t: int) -> Tensor:
    """x[i - t, j - t] with indices mirrored about the edges (numpy's 'reflect'), by index arithmetic."""
    h, w = x.shape[-2:]

    def mirrored(i: Tensor, n: int) -> Tensor:
        i = i.abs()
        return torch.where(i > n - 1, 2 * (n - 1) - i, i)

    rows, cols = mirrored(torch.arange(h) - t, h), mirrored(torch.arange(w) - t, w)
    return x[..., rows[:, None], cols[None, :]]


def test_a_shift_moves_the_image_and_mirrors_it_into_the_gap() -> None:
    x = torch.randn(2, 3, 5, 6)
    assert torch.equal(shifted(x, 1, "reflect"), reflect_shift(x, 1))
    assert torch.equal(shifted(x, -2, "reflect"), reflect_shift(x, -2))
    assert torch.equal(shifted(x, 1, "replicate")[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(shifted(x, 1, "replicate")[..., 0, 1:], x[..., 0, :-1])  # the edge row repeated


def test_tta_logits_are_the_weighted_mean_of_the_augmented_passes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.randn(6, 3, 8, 8)
    model(x)
    f = model

    def mirrored(v: Tensor) -> Tensor:
        return (f(v) + f(v.flip(3))) / 2

    assert torch.equal(tta_forward(f, None)(x), f(x))  # no TTA: the model itself
    assert torch.allclose(tta_forward(f, TTAConfig())(x), mirrored(x), atol=1e-6)
    # airbench94's level 2: the unshifted pair weighs 1/2, the two diagonal shifts 1/4 each
    expected = mirrored(x) / 2 + (mirrored(reflect_shift(x, 1)) + mirrored(reflect_shift(x, -1))) / 4
    assert torch.allclose(tta_forward(f, TTAConfig(translate=1))(x), expected, atol=1e-6)
    no_flip = TTAConfig(hflip=False, translate=2)
    assert len(views(x, no_flip)) == 3 and sum(w for w, _ in views(x, TTAConfig(translate=2))) == 1.0
    assert torch.allclose(tta_forward(f, no_flip)(x),
                          f(x) / 2 + (f(reflect_shift(x, 2)) + f(reflect_shift(x, -2))) / 4, atol=1e-6)


def manual_test_loss(run_dir: Path, tta: TTAConfig) -> tuple[float, float]:
    """(loss, accuracy) of the run's final weights on its test split, each view passed by hand."""
    from training.data import load_data

    run = load_run(run_dir, "final")
    cfg = config(run_dir / "spec.yaml")
    data = load_data(cfg.dataset, run.spec)
    assert data.test is not None
    images, labels = next(iter(data.test.batches([torch.arange(len(data.test))])))
    x = run.preprocess.batch_preprocess(None, torch.device("cpu"))(images)
    with torch.inference_mode():
        logits = sum(w * run.model(v) for w, v in views(x, tta))
    assert isinstance(logits, Tensor)
    return float(F.cross_entropy(logits, labels)), int((logits.argmax(1) == labels).sum()) / len(labels)


def test_the_trainer_and_evaluate_report_the_tta_logits(
    write_spec: Callable[..., Path], tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    path = write_spec(DIGITS_SPEC)
    tta = TTAConfig(translate=1)
    cfg = config(path, epochs=1, tta=tta.model_dump(), dataset={"kind": "digits", "val_fraction": 0})
    result = train(load_spec(path), cfg, out=tmp_path / "r", quiet=True, log=print)
    loss, acc = manual_test_loss(tmp_path / "r", tta)
    assert result.test_loss == pytest.approx(loss, rel=1e-5) and result.test_acc == acc
    code, _, err = cli("evaluate", tmp_path / "r", "--weights", "final", "--out", tmp_path / "e")
    assert code == 0, err
    found = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert found["loss"] == pytest.approx(loss, rel=1e-5) and found["top1"] == acc
    plain, _ = manual_test_loss(tmp_path / "r", TTAConfig(hflip=False))
    assert plain != pytest.approx(loss, rel=1e-5)  # the views changed the logits
    predicted_with_the_views(tmp_path / "r", tta, tmp_path / "images")


def predicted_with_the_views(run_dir: Path, tta: TTAConfig, folder: Path) -> None:
    """`predict` on image files gives the probabilities of the mean of the views' logits."""
    from PIL import Image

    from training.predict import predict

    run = load_run(run_dir, "final")
    folder.mkdir()
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    files = []
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i}.png")
        files.append(folder / f"{i}.png")
    found, errors = predict(run, files, topk=1, workers=0)
    x = run.preprocess.batch_preprocess(None, torch.device("cpu"))(images)
    with torch.inference_mode():
        probs = sum(w * run.model(v) for w, v in views(x, tta)).softmax(1)  # type: ignore[union-attr]
    assert not errors and [p.top[0][1] for p in found] == pytest.approx(probs.max(1).values.tolist(), rel=1e-5)


def test_a_shift_as_large_as_the_input_is_one_located_error(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    path = write_spec(DIGITS_SPEC)
    with pytest.raises(ConfigProblems) as exc:
        train(load_spec(path), config(path, tta={"translate": 8}), out=tmp_path / "r", quiet=True, log=print)
    assert exc.value.lines() == [
        "error: training.tta.translate: shifts by 8 pixels, but the spec's input is 8x8: use at most 7"]
    assert not (tmp_path / "r").exists()
