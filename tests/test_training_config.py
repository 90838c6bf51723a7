"""The training config: defaults, strict validation, located errors from the file and from flags."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SPECS

from builder.lang.errors import SpecError
from training.cli import load_training
from training.config import (
    AdamWConfig,
    CosineSchedule,
    DigitsData,
    FakeData,
    ImageFolderData,
    OneCycleSchedule,
    SGDConfig,
    TrainingConfig,
)
from training.flags import TRAIN_FLAGS

BASE = """\
name: small
input: {channels: 1, height: 8, width: 8}
num_classes: 10
blocks:
  - {out_channels: 8, kernel_size: 3, padding: 1}
classifier: {hidden: [16]}
"""

Cli = Callable[..., tuple[int, str, str]]


def args(spec: Path, *overrides: str, **flags: str) -> argparse.Namespace:
    values = {**{f.dest: None for f in TRAIN_FLAGS}, "data": None, "resume": None}
    return argparse.Namespace(spec=str(spec), overrides=list(overrides), **{**values, **flags})


def loaded(spec: Path, *overrides: str, **flags: str) -> TrainingConfig:
    return load_training(args(spec, *overrides, **flags))[2]


def errors(spec: Path, *overrides: str, **flags: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_training(args(spec, *overrides, **flags))
    return exc.value.lines()


def test_a_spec_without_a_training_section_gets_the_defaults(write_spec: Callable[..., Path]) -> None:
    config = loaded(write_spec(BASE))
    assert config == TrainingConfig()
    assert isinstance(config.dataset, DigitsData) and isinstance(config.optimizer, SGDConfig)
    assert isinstance(config.schedule, CosineSchedule)
    assert (config.epochs, config.batch_size, config.device, config.precision) == (10, 128, "auto", "fp32")
    assert not (config.compile or config.channels_last)


def test_a_mapping_without_kind_takes_the_default_kind(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  optimizer: {lr: 0.2}\n  dataset: {test_fraction: 0.5}\n")
    config = loaded(path)
    assert config.optimizer == SGDConfig(kind="sgd", lr=0.2)
    assert config.dataset == DigitsData(kind="digits", test_fraction=0.5)


def test_digits_augmentation_keeps_its_own_defaults_when_partly_given(write_spec: Callable[..., Path]) -> None:
    config = loaded(write_spec(BASE + "training:\n  dataset: {augment: {crop_padding: 0.1}}\n"))
    assert (config.dataset.augment.crop_padding, config.dataset.augment.hflip) == (0.1, False)  # never flips digits
    fake = loaded(write_spec(BASE), data="fake")
    assert (fake.dataset.augment.crop_padding, fake.dataset.augment.hflip) == (0.125, True)


def test_flags_override_the_file(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  epochs: 7\n  optimizer: {kind: adamw, lr: 0.01}\n")
    config = loaded(path, "training.seed=5", epochs="3", batch_size="16", lr="2e-3", device="cpu", seed="9")
    assert (config.epochs, config.batch_size, config.seed, config.device) == (3, 16, 9, "cpu")
    assert config.optimizer == AdamWConfig(kind="adamw", lr=2e-3)


def test_data_flag_keeps_options_of_the_same_kind_and_replaces_another(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  dataset: {kind: fake, train_size: 10}\n")
    assert loaded(path, data="fake").dataset == FakeData(kind="fake", train_size=10)
    assert loaded(path, data="digits").dataset == DigitsData(kind="digits")
    assert loaded(path, data="image_folder:some/dir").dataset == ImageFolderData(kind="image_folder", root="some/dir")
    # --set training.dataset.* applies to the dataset --data names, not dropped by it
    with_set = loaded(path, "training.dataset.train_size=32", "training.dataset.val_fraction=0", data="digits")
    assert with_set.dataset == DigitsData(kind="digits", train_size=32, val_fraction=0)


def test_a_variant_inherits_and_patches_the_training_section(write_spec: Callable[..., Path]) -> None:
    write_spec(BASE + "training:\n  epochs: 4\n  schedule: {kind: cosine, warmup_epochs: 1}\n", "base.yaml")
    path = write_spec("extends: base.yaml\nname: child\ntraining:\n  schedule: {kind: one_cycle}\n  seed: 3\n")
    config = loaded(path)
    assert (config.epochs, config.seed) == (4, 3)
    assert config.schedule == OneCycleSchedule(kind="one_cycle")  # another kind: the old fields do not apply


def test_the_quick_start_spec_is_a_valid_digits_recipe() -> None:
    config = loaded(SPECS / "alexnet_digits.yaml")
    assert isinstance(config.dataset, DigitsData) and config.epochs <= 20


def test_errors_in_the_file_are_located(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        BASE + "training:\n  epochs: 0\n  optimizr: {lr: 1}\n  schedule: {kind: one_cycle, warmup_epochs: 1}\n"
        "  dataset: {kind: digits, augment: {hflip: 1}}\n  label_smoothing: 1.5\n"
    )
    assert errors(path) == [
        f"{path}:8:11: error: training.epochs: must be > 0, got 0",
        f"{path}:9:3: error: training.optimizr: unknown field 'optimizr'; did you mean 'optimizer'?",
        f"{path}:10:31: error: training.schedule.warmup_epochs: unknown field 'warmup_epochs'",
        f"{path}:11:44: error: training.dataset.augment.hflip: must be true or false, got 1",
        f"{path}:12:20: error: training.label_smoothing: must be < 1.0, got 1.5",
    ]


def test_monitor_and_early_stopping_take_the_tasks_metrics(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  monitor: val_loss\n  early_stopping: {patience: 2}\n")
    config = loaded(path)
    assert config.monitor == "val_loss" and config.early_stopping is not None
    assert config.early_stopping.metric == "val_acc"  # the task's headline, as it always was
    assert loaded(write_spec(BASE)).monitor == "val_acc"


def test_an_unknown_metric_is_located_with_a_suggestion(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  monitor: val_accuracy\n  early_stopping: {metric: val_los}\n")
    known = "the classification task logs val_loss, val_acc"
    assert errors(path) == [
        f"{path}:8:12: error: training.monitor: unknown metric 'val_accuracy': {known}; did you mean 'val_acc'?",
        f"{path}:9:28: error: training.early_stopping.metric: unknown metric 'val_los': {known}; "
        "did you mean 'val_loss'?",
    ]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"epochs": "0"}, "--epochs 0: error: training.epochs: must be > 0, got 0"),
        ({"epochs": "two"}, "--epochs two: error: training.epochs: must be an integer, got 'two'"),
        ({"batch_size": "1.5"}, "--batch-size 1.5: error: training.batch_size: must be an integer, got 1.5"),
        ({"lr": "-1"}, "--lr -1: error: training.optimizer.lr: must be > 0.0, got -1"),
        ({"seed": "-3"}, "--seed -3: error: training.seed: must be >= 0, got -3"),
        ({"device": "gpu"}, "--device gpu: error: training.device: must be auto, cpu, mps, cuda or cuda:N, got 'gpu'"),
        ({"data": "mnist"}, "--data mnist: error: training.dataset.kind: unknown kind 'mnist'; expected one of digits, "
                            "cifar10, image_folder, fake, seg_folder, seg_csv, shapes"),
        ({"data": "digits:/x"}, "--data digits:/x: error: training.dataset.root: unknown field 'root'"),
    ],
)
def test_flag_errors_are_located_at_the_flag(
    write_spec: Callable[..., Path], flags: dict[str, str], expected: str
) -> None:
    assert errors(write_spec(BASE), **flags) == [expected]


def test_set_errors_are_located_at_the_argument(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE)
    assert errors(path, "training.optimizer={kind: adam, beta: [0.9, 0.99]}") == [
        "--set training.optimizer={kind: adam, beta: [0.9, 0.99]}: error: training.optimizer.beta: "
        "unknown field 'beta'; did you mean 'betas'?"
    ]
    assert errors(path, "training.schedule={kind: cosin}") == [
        "--set training.schedule={kind: cosin}: error: training.schedule.kind: unknown kind 'cosin'; expected one of "
        "cosine, constant, step, one_cycle, triangle; did you mean 'cosine'?"
    ]


def test_nesterov_needs_momentum(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  optimizer: {kind: sgd, momentum: 0.0}\n")
    (line,) = errors(path)
    assert line.endswith("training.optimizer.nesterov: needs momentum > 0 (set nesterov: false for plain SGD)")
    assert loaded(path, "training.optimizer.nesterov=false").optimizer == SGDConfig(
        kind="sgd", momentum=0.0, nesterov=False
    )


def test_the_cli_prints_config_errors_without_a_traceback(write_spec: Callable[..., Path], cli: Cli) -> None:
    code, out, err = cli("train", write_spec(BASE), "--epochs", "0", "--batch-size", "x")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "--batch-size x: error: training.batch_size: must be an integer, got 'x'",
        "--epochs 0: error: training.epochs: must be > 0, got 0",
    ]


def test_validate_and_the_train_parser_stay_torch_free(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training: {epochs: 2}\n")
    code = (
        "import sys; from builder.tools.cli import main, build_parser; build_parser();"
        f"main(['validate', {str(path)!r}]);"
        "from training.cli import load_training; import training, training.flags;"
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_image_folder_memory_and_cache_fields(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE)
    default = loaded(path, data="image_folder:some/dir").dataset
    assert isinstance(default, ImageFolderData) and (default.in_memory, default.cache_dir) == ("auto", None)
    folder = write_spec(BASE + "training:\n  dataset: {kind: image_folder, root: d}\n", "folder.yaml")
    chosen = loaded(folder, "training.dataset.in_memory=false", "training.dataset.cache_dir=/tmp/c")
    assert (chosen.dataset.in_memory, chosen.dataset.cache_dir) == (False, "/tmp/c")  # type: ignore[union-attr]
    (line,) = errors(folder, "training.dataset.in_memory=maybe")
    assert line.startswith("--set training.dataset.in_memory=maybe: error: training.dataset.in_memory:")


def test_precision_auto_follows_the_native_bf16_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from training import precision

    auto, cpu = TrainingConfig(precision="auto"), torch.device("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert precision.resolve_precision(auto, cpu).precision == "bf16"
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve_precision(auto, cpu).precision == "fp32"
    # a GPU without bf16 still runs half precision on its tensor cores: fp16, with the scaler
    assert precision.resolve_precision(auto, torch.device("cuda")).precision == "fp16"
    assert precision.resolve_precision(TrainingConfig(precision="bf16"), cpu).precision == "bf16"  # never overridden
    assert precision.native_bf16(torch.device("mps")) is False


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"batch_size": 10**30}, "batch_size"),
        ({"epochs": int("9" * 400)}, "epochs"),
        ({"schedule": {"kind": "cosine", "warmup_epochs": float("inf")}}, "warmup_epochs"),
        ({"optimizer": {"lr": float("nan")}}, "lr"),
        ({"dataset": {"kind": "digits", "split_seed": 2**32}}, "split_seed"),
        ({"dataset": {"kind": "digits", "test_fraction": 0.999}}, "test_fraction"),
        ({"dataset": {"kind": "digits", "val_fraction": 0.9}}, "val_fraction"),
        ({"threads": 0}, "threads"),
    ],
)
def test_numbers_outside_their_bounds_are_refused(changes: dict[str, object], where: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as exc:
        TrainingConfig.model_validate(changes)
    assert where in str(exc.value)


def test_the_largest_allowed_values_validate() -> None:
    config = TrainingConfig.model_validate({
        "batch_size": 10**9, "epochs": 10**9, "threads": 1024,
        "dataset": {"kind": "digits", "split_seed": 2**31 - 1, "test_fraction": 0.5, "val_fraction": 0.5},
    })
    assert config.batch_size == 10**9 and config.dataset.split_seed == 2**31 - 1  # type: ignore[union-attr]


def test_recipe_settings_out_of_bounds_are_located(write_spec: Callable[..., Path]) -> None:
    path = write_spec(
        BASE + "training:\n  label_smoothing: -0.1\n  ema: {decay: 1.0, every: 0}\n  tta: {vflip: true}\n"
        "  optimizer: {groups: [{params: norms}, {params: bias, lr_scale: 0}]}\n"
    )
    assert errors(path) == [
        f"{path}:8:20: error: training.label_smoothing: must be >= 0.0, got -0.1",
        f"{path}:9:16: error: training.ema.decay: must be < 1.0, got 1.0",
        f"{path}:9:28: error: training.ema.every: must be > 0, got 0",
        f"{path}:10:9: error: training.tta.vflip: unknown field 'vflip'; did you mean 'hflip'?",
        f"{path}:11:33: error: training.optimizer.groups[0].params: must be one of bias, norm, norm_and_bias; "
        "got 'norms'; did you mean 'norm'?",
        f"{path}:11:66: error: training.optimizer.groups[1].lr_scale: must be > 0.0, got 0",
    ]


def test_recipe_settings_validate(write_spec: Callable[..., Path]) -> None:
    path = write_spec(BASE + "training:\n  ema: {decay: 0.99, every: 5, ramp: 3, lookahead: true}\n"
                      "  tta: {translate: 1}\n  optimizer: {groups: [{params: norm, lr_scale: 64, weight_decay: 0}]}\n"
                      "  dataset: {augment: {hflip: true, hflip_mode: alternate, padding_mode: reflect}}\n")
    config = loaded(path)
    assert config.ema is not None and (config.ema.every, config.ema.lookahead) == (5, True)
    assert config.tta is not None and (config.tta.hflip, config.tta.translate) == (True, 1)
    assert config.optimizer.groups[0].lr_scale == 64 and config.optimizer.groups[0].weight_decay == 0
    assert config.dataset.augment.hflip_mode == "alternate"  # type: ignore[union-attr]
    plain = loaded(write_spec(BASE, "plain.yaml"))
    assert (plain.ema, plain.tta) == (None, None)  # off by default
    twice = "training.optimizer={groups: [{params: bias}, {params: bias}]}"
    (line,) = errors(path, twice)
    assert line.endswith("training.optimizer.groups: groups[1] selects bias again (as groups[0] does)")
    (line,) = errors(path, "training.dataset={kind: shapes}")
    assert line.endswith("training.tta: test-time augmentation averages class scores: it serves classification "
                         "datasets, not segmentation ones (set tta: null)")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("training.label_smoothing=1.0", "training.label_smoothing: must be < 1.0, got 1.0"),
        ("training.ema={decay: 0}", "training.ema.decay: must be > 0.0, got 0"),
        ("training.tta={hflip: true, mirror: true}", "training.tta.mirror: unknown field 'mirror'"),
    ],
)
def test_bad_recipe_settings_exit_2_with_one_located_line(
    write_spec: Callable[..., Path], cli: Cli, setting: str, expected: str
) -> None:
    code, out, err = cli("train", write_spec(BASE), "--set", setting)
    assert code == 2 and out == ""
    assert err.splitlines() == [f"--set {setting}: error: {expected}"]
