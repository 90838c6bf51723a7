"""Fine-tuning from saved weights: a new head is re-initialized and named, unknown or missing
names are refused unless allowed, frozen parts do not change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import SPECS
from safetensors.torch import save_file
from test_trainer import DIGITS_SPEC

from training.checkpoint import WEIGHTS, load_weights

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def base_run(write_spec: Callable[..., Path], tmp_path: Path, cli: Cli) -> tuple[Path, Path]:
    spec = write_spec(DIGITS_SPEC)
    assert cli("train", spec, "--epochs", "1", "--out", tmp_path / "base", "--quiet")[0] == 0
    return spec, tmp_path / "base" / WEIGHTS


def test_init_loads_matching_tensors_reinitializes_a_new_head_and_freezes(
    base_run: tuple[Path, Path], tmp_path: Path, cli: Cli
) -> None:
    spec, weights = base_run
    code, stdout, _ = cli("train", spec, "--init", weights, "--set", "num_classes=12", "--set",
                          "training.init.freeze=[features]", "--epochs", "1", "--out", tmp_path / "ft", "--quiet")
    assert code == 0
    line = next(x for x in stdout.splitlines() if x.startswith("init from"))
    assert "re-initialized (shape differs): classifier" in line and "(12," in line and "frozen: features" in line
    before, after = load_weights(weights), load_weights(tmp_path / "ft" / WEIGHTS)
    features = [k for k in before if k.startswith("features.") and "running" not in k and "batches" not in k]
    assert features and all(torch.equal(before[k], after[k]) for k in features if k.endswith(("weight", "bias")))
    head = [k for k in after if after[k].dim() and after[k].shape[0] == 12]
    assert head and all(before[k].shape != after[k].shape for k in head)


def test_unknown_or_missing_names_are_refused_unless_allowed(
    base_run: tuple[Path, Path], tmp_path: Path, cli: Cli
) -> None:
    spec, weights = base_run
    extra = {**load_weights(weights), "extra.weight": torch.zeros(2)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    code, _, stderr = cli("train", spec, "--init", tmp_path / "extra.safetensors", "--out", tmp_path / "a")
    assert code == 2 and f"--init {tmp_path / 'extra.safetensors'}: error: training.init.weights:" in stderr
    assert "1 tensors of the file are not in the model (extra.weight)" in stderr and not (tmp_path / "a").exists()
    partial = {k: v for k, v in load_weights(weights).items() if not k.startswith("classifier")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    code, _, stderr = cli("train", spec, "--init", tmp_path / "partial.safetensors", "--out", tmp_path / "b")
    assert code == 2 and "allow_missing" in stderr
    code, _, _ = cli("train", spec, "--init", tmp_path / "partial.safetensors", "--set",
                     "training.init.allow_missing=true", "--epochs", "1", "--out", tmp_path / "c", "--quiet")
    assert code == 0


@pytest.mark.slow
def test_fine_tune_ported_torchvision_alexnet_on_digits(tmp_path: Path, cli: Cli) -> None:
    """torchvision's AlexNet (random init: no download) ported, then fine-tuned with a 10-class head."""
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "tv.pth")
    spec = SPECS / "alexnet_torchvision.yaml"
    small = ["--set", "input.height=64", "--set", "input.width=64"]  # fast on a CPU; the weights fit any size
    assert cli("port-weights", spec, *small, tmp_path / "tv.pth", "-o", tmp_path / "ported.safetensors")[0] == 0
    code, stdout, stderr = cli(
        "train", spec, *small, "--set", "num_classes=10", "--init", tmp_path / "ported.safetensors",
        "--set", "training.init.freeze=[features]", "--data", "digits", "--set", "training.dataset.train_size=40",
        "--set", "training.dataset.test_size=20", "--epochs", "1", "--batch-size", "32", "--out", tmp_path / "r",
        "--quiet",
    )
    assert code == 0, stderr
    assert "14 of 16 tensors loaded; re-initialized (shape differs): classifier.fc3.bias (10,) (file (1000,))" in stdout
    ported = load_weights(tmp_path / "ported.safetensors", require_checksum=False)  # port-weights: no checksum
    tuned = load_weights(tmp_path / "r" / WEIGHTS)
    assert all(torch.equal(ported[k], tuned[k]) for k in ported if k.startswith("features."))
    assert not torch.equal(ported["classifier.fc1.weight"], tuned["classifier.fc1.weight"])  # trained
