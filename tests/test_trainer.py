"""The training loop end to end on tiny specs: outputs, exact resume, signals, divergence, refusals."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT
from torch import nn

from builder.lang.loading import load_spec
from builder.model.build import build_model
from training import TrainingConfig, train
from training.checkpoint import CHECKPOINT, WEIGHTS, load_checkpoint, load_weights
from training.errors import CheckpointError, ConfigProblems, NonFiniteLoss, RunDirError, TrainingInterrupted
from training.metrics import COLUMNS
from training.runfiles import read_metrics
from training.trainer import Position, Trainer

# 1x8x8 digits, two blocks of 8 channels: an epoch of 1,437 images takes a fraction of a second.
DIGITS_SPEC = """\
name: tiny_digits
input: {channels: 1, height: 8, width: 8}
num_classes: 10
defaults: {norm: {kind: batchnorm}, pool: {kind: max, kernel_size: 2, stride: 2}}
blocks:
  - {out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}
  - {out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}
classifier: {hidden: [32], dropout: 0.2}
training:
  epochs: 2
  batch_size: 128
  optimizer: {kind: sgd, lr: 0.1}
  schedule: {kind: cosine}
"""

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def spec_path(write_spec: Callable[..., Path]) -> Path:
    return write_spec(DIGITS_SPEC)


def config(path: Path, **changes: object) -> TrainingConfig:
    spec = load_spec(path)
    return TrainingConfig.model_validate({**(spec.training or {}), **changes})


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a / WEIGHTS), load_weights(b / WEIGHTS)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_leaves_every_output(spec_path: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "run"
    code, stdout, _ = cli("train", spec_path, "--out", out, "--quiet", "--set", "training.label_smoothing=0.1")
    assert code == 0
    assert "epoch 2/2" in stdout and "best validation epoch" in stdout and f"outputs in {out}" in stdout

    rows = read_metrics(out / "metrics.csv")
    assert list(rows[0]) == list(COLUMNS) and [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= float(r["test_acc"]) <= 1 and float(r["seconds"]) > 0 for r in rows)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Total params" in (out / "summary.txt").read_text()

    resolved = yaml.safe_load((out / "spec.yaml").read_text())
    assert resolved["training"]["label_smoothing"] == 0.1 and resolved["training"]["dataset"]["kind"] == "digits"
    assert load_spec(out / "spec.yaml") == load_spec(spec_path, ["training.label_smoothing=0.1"]).model_copy(
        update={"training": resolved["training"]}
    )  # the resolved spec loads back, with the full training section

    weights = load_weights(out / WEIGHTS)
    assert sorted(weights) == sorted(build_model(load_spec(spec_path)).state_dict())
    saved = load_checkpoint(out / CHECKPOINT)
    assert {"model", "optimizer", "scheduler", "rng", "position"} <= set(saved)
    assert saved["position"]["epoch"] == 2


def test_python_api_returns_the_final_metrics_and_learns(spec_path: Path, tmp_path: Path) -> None:
    result = train(load_spec(spec_path), config(spec_path, epochs=3), out=tmp_path / "r", quiet=True, log=print)
    assert result.epoch == 3 and len(result.history) == 3
    assert result.test_acc == result.history[-1].test_acc
    val = [m.val_acc or 0.0 for m in result.history]
    assert result.best_epoch == val.index(max(val)) + 1  # picked on validation, the first of equals
    # The best weights, evaluated again at the end, give the test accuracy of their epoch.
    assert result.best_test_acc == result.history[result.best_epoch - 1].test_acc
    assert result.test_acc > 0.5  # ten classes: chance is 0.1


def test_same_seed_same_weights_other_seed_other_weights(spec_path: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_path)
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(spec, config(spec_path, epochs=1, seed=seed), out=tmp_path / name, quiet=True, log=print)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    assert not same_weights(tmp_path / "a", tmp_path / "c")


def test_resume_after_one_epoch_is_bit_identical(spec_path: Path, tmp_path: Path) -> None:
    """N=2 straight vs 1 epoch, then resumed to 2 (a constant schedule does not depend on N)."""
    spec = load_spec(spec_path)
    straight = config(spec_path, schedule={"kind": "constant"})
    train(spec, straight, out=tmp_path / "straight", quiet=True, log=print)
    train(spec, config(spec_path, schedule={"kind": "constant"}, epochs=1), out=tmp_path / "split", quiet=True,
          log=print)
    result = train(spec, straight, resume=tmp_path / "split", quiet=True, log=print)
    assert result.epoch == 2
    assert same_weights(tmp_path / "straight", tmp_path / "split")
    assert read_metrics(tmp_path / "split" / "metrics.csv")[1]["train_loss"] == (
        read_metrics(tmp_path / "straight" / "metrics.csv")[1]["train_loss"]
    )


def test_interrupted_mid_epoch_and_resumed_is_bit_identical(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT during step 5 of epoch 2 (cosine schedule, dropout, augmentation) loses nothing."""
    spec, cfg = load_spec(spec_path), config(spec_path, epochs=3)
    train(spec, cfg, out=tmp_path / "straight", quiet=True, log=print)

    steps = {"n": 0}
    add = Position.add

    def add_then_signal(self: Position, *args: float) -> None:
        add(self, *args)  # type: ignore[arg-type]
        steps["n"] += 1
        if steps["n"] == 11 + 5:  # 11 steps per epoch (1,293 images after validation, batch 128)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Position, "add", add_then_signal)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(spec, cfg, out=tmp_path / "split", quiet=True, log=print)
    assert stopped.value.exit_code == 130 and "at epoch 2, step 5" in stopped.value.lines()[0]
    assert load_checkpoint(tmp_path / "split" / CHECKPOINT)["position"]["step"] == 5
    assert not (tmp_path / "split" / WEIGHTS).exists()

    monkeypatch.setattr(Position, "add", add)
    train(spec, cfg, resume=tmp_path / "split", quiet=True, log=print)
    assert same_weights(tmp_path / "straight", tmp_path / "split")
    assert untimed(tmp_path / "split") == untimed(tmp_path / "straight")


def untimed(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(run / "metrics.csv")]


def test_sigterm_after_an_epoch_checkpoints_and_exits_143(spec_path: Path, tmp_path: Path) -> None:
    def log(line: str) -> None:
        if line.startswith("epoch 1/"):
            signal.raise_signal(signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(load_spec(spec_path), config(spec_path, epochs=3), out=tmp_path / "r", quiet=True, log=log)
    assert stopped.value.exit_code == 143 and "after epoch 1" in stopped.value.lines()[0]
    position = load_checkpoint(tmp_path / "r" / CHECKPOINT)["position"]
    assert (position["epoch"], position["step"]) == (1, 0)
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are restored


@pytest.mark.slow
def test_sigint_to_the_cli_checkpoints_prints_the_resume_command_and_resumes(
    spec_path: Path, tmp_path: Path, cli: Cli
) -> None:
    out = tmp_path / "run"
    args = ["train", str(spec_path), "--epochs", "8", "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("epoch 1/"):
            proc.send_signal(signal.SIGINT)
            break
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted by SIGINT" in stderr
    resume_line = stderr.strip().splitlines()[-1]
    assert resume_line == f"resume with: python -m builder train --resume {out} --quiet"  # the run has the rest

    position = load_checkpoint(out / CHECKPOINT)["position"]
    assert 1 <= position["epoch"] < 8
    code, stdout, _ = cli(*shlex.split(resume_line.removeprefix("resume with: python -m builder ")))
    assert code == 0 and "resuming" in stdout and "epoch 8/8" in stdout
    assert len(read_metrics(out / "metrics.csv")) == 8


def test_a_non_finite_loss_stops_with_exit_1_naming_epoch_step_and_lr(
    spec_path: Path, tmp_path: Path, cli: Cli
) -> None:
    code, _, stderr = cli("train", spec_path, "--lr", "1e6", "--out", tmp_path / "r", "--quiet")
    assert code == 1
    (line,) = stderr.strip().splitlines()
    assert line.startswith("error: the loss is nan at epoch 1, step ") and "learning rate" in line and "--lr" in line


def test_a_non_finite_loss_keeps_the_last_good_checkpoint(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = torch.nn.functional.cross_entropy
    calls = {"train": 0}

    def poisoned(logits: torch.Tensor, labels: torch.Tensor, **kw: object) -> torch.Tensor:
        calls["train"] += "label_smoothing" in kw
        loss = real(logits, labels, **kw)  # type: ignore[arg-type]
        return loss * float("inf") if calls["train"] == 11 + 3 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    with pytest.raises(NonFiniteLoss) as stopped:
        train(load_spec(spec_path), config(spec_path, epochs=3), out=tmp_path / "r", quiet=True, log=print)
    assert stopped.value.exit_code == 1
    assert "epoch 2, step 3 of 11" in str(stopped.value) and "after epoch 1" in str(stopped.value)
    assert load_checkpoint(tmp_path / "r" / CHECKPOINT)["position"]["epoch"] == 1
    assert len(read_metrics(tmp_path / "r" / "metrics.csv")) == 1


def test_resume_refuses_a_changed_recipe_or_spec_located(spec_path: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "r"
    assert cli("train", spec_path, "--epochs", "1", "--out", out, "--quiet")[0] == 0
    code, _, stderr = cli("train", spec_path, "--resume", out, "--lr", "0.5", "--set", "blocks[0].out_channels=4")
    assert code == 2
    assert "--lr 0.5: error: training.optimizer.lr: is 0.5 here but 0.1 in the run being resumed" in stderr
    assert "--set blocks[0].out_channels=4: error: blocks[0].out_channels: is 4 here but 8" in stderr
    code, _, stderr = cli("train", spec_path, "--resume", out, "--epochs", "2", "--quiet")  # epochs may grow
    assert code == 0


def test_resume_from_the_run_directory_alone(spec_path: Path, tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "r"
    assert cli("train", spec_path, "--epochs", "1", "--lr", "0.05", "--out", out, "--quiet")[0] == 0
    code, stdout, _ = cli("train", "--resume", out, "--epochs", "2", "--quiet")  # a changeable flag changes
    assert code == 0 and "epoch 2/2" in stdout
    assert load_checkpoint(out / CHECKPOINT)["config"]["optimizer"]["lr"] == 0.05  # the run's own recipe
    assert yaml.safe_load((out / "spec.yaml").read_text())["training"]["epochs"] == 2  # as last trained
    code, _, stderr = cli("train", "--resume", out, "--lr", "0.5")  # a contradicting flag: refused as with SPEC
    assert code == 2 and "--lr 0.5: error: training.optimizer.lr: is 0.5 here but 0.05 in the run" in stderr
    code, _, stderr = cli("train", "--resume", out, "--set", "blocks[0].out_channels=4")
    assert code == 2 and "blocks[0].out_channels: is 4 here but 8" in stderr
    (tmp_path / "empty").mkdir()
    code, _, stderr = cli("train", "--resume", tmp_path / "empty")  # not a run
    assert code == 2
    assert stderr.strip() == f"error: --resume {tmp_path / 'empty'}: not a run directory (it has no spec.yaml)"
    code, _, stderr = cli("train", "--epochs", "2")
    assert code == 2 and stderr.strip() == "error: train needs a SPEC, or --resume RUN_DIR to continue a run"


def test_an_output_directory_holding_a_run_is_refused(spec_path: Path, tmp_path: Path) -> None:
    spec, cfg = load_spec(spec_path), config(spec_path, epochs=1)
    train(spec, cfg, out=tmp_path / "r", quiet=True, log=print)
    with pytest.raises(RunDirError, match="already holds a run; continue it with --resume"):
        train(spec, cfg, out=tmp_path / "r", quiet=True, log=print)


def test_a_spec_that_cannot_take_the_dataset_is_refused_before_training(
    write_spec: Callable[..., Path], tmp_path: Path, cli: Cli
) -> None:
    path = write_spec(DIGITS_SPEC.replace("num_classes: 10", "num_classes: 4"))
    code, _, stderr = cli("train", path, "--out", tmp_path / "r")
    assert code == 2 and not (tmp_path / "r").exists()
    assert stderr.strip() == (
        f"{path}:3:14: error: num_classes: the digits dataset has 10 classes but the spec has only 4 outputs; "
        "set num_classes: 10"
    )
    with pytest.raises(ConfigProblems, match=r"input\.channels: fake images can feed 1"):
        spec = load_spec(path, ["input.channels=2"])
        train(spec, TrainingConfig.model_validate({"dataset": {"kind": "fake"}}), out=tmp_path / "r2")


def test_eval_every_skips_test_epochs_but_always_tests_the_last(spec_path: Path, tmp_path: Path) -> None:
    result = train(load_spec(spec_path), config(spec_path, epochs=3, eval_every=2), out=tmp_path / "r", quiet=True,
                   log=print)
    assert [m.test_acc is not None for m in result.history] == [False, True, True]
    assert read_metrics(tmp_path / "r" / "metrics.csv")[0]["test_acc"] is None


def test_training_options_run(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """adamw, one-cycle, label smoothing, clipping, channels_last, bf16 autocast: a fake-data smoke run."""
    path = write_spec(textwrap.dedent(DIGITS_SPEC).replace("channels: 1, height: 8", "channels: 3, height: 12"))
    cfg = TrainingConfig.model_validate({
        "dataset": {"kind": "fake", "train_size": 40, "test_size": 10}, "epochs": 1, "batch_size": 16,
        "optimizer": {"kind": "adamw"}, "schedule": {"kind": "one_cycle"}, "label_smoothing": 0.1,
        "grad_clip": 1.0, "channels_last": True, "precision": "bf16", "device": "cpu",
    })
    result = train(load_spec(path), cfg, out=tmp_path / "r", quiet=True, log=print)
    assert result.epoch == 1 and len(load_weights(tmp_path / "r" / WEIGHTS)) > 0


def test_tensorboard_event_file_holds_per_step_and_per_epoch_scalars(spec_path: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(load_spec(spec_path), config(spec_path, epochs=2), out=tmp_path / "r", quiet=True, log=print)
    board = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert {"train/loss_step", "train/lr", "train/loss", "train/acc", "val/loss", "val/acc", "test/loss",
            "test/acc", "images_per_s"} <= tags
    steps = [e.step for e in board.Scalars("train/loss_step")]
    assert steps == list(range(1, 23))  # 11 steps per epoch, numbered globally
    rows = read_metrics(tmp_path / "r" / "metrics.csv")
    val_acc = [e.value for e in board.Scalars("val/acc")]
    assert [e.step for e in board.Scalars("val/acc")] == [1, 2]
    assert val_acc == pytest.approx([float(r["val_acc"]) for r in rows], abs=1e-5)
    lrs = [e.value for e in board.Scalars("train/lr")]
    assert lrs[0] > lrs[-1] > 0  # cosine, read back per step


def test_a_checkpoint_position_from_before_the_task_seam_still_loads() -> None:
    """Checkpoints once kept classification's correct count as `correct`; it becomes the task's tally."""
    old = {**Position(epoch=1, step=3, loss_sum=6.0, seen=12).state(), "correct": 7}
    del old["tally"]
    pos = Position.from_state(old)
    assert (pos.step, pos.tally, pos.seen) == (3, [7.0], 12)
    pos.add(3, 1.0, [2.0], 4, 1.0)
    assert pos.tally == [9.0] and pos.seen == 16


# --- recipe features: label smoothing, Nesterov, parameter groups, weight averaging --------------------


def trainer_of(path: Path, run_dir: Path, **changes: object) -> Trainer:
    """A Trainer of the spec at `path` on CPU (nothing is written before run())."""
    from training.data import load_data

    spec, cfg = load_spec(path), config(path, device="cpu", **changes)
    return Trainer(spec, cfg, load_data(cfg.dataset, spec), torch.device("cpu"), run_dir, True, print)


def test_label_smoothing_changes_the_training_loss_as_defined(spec_path: Path, tmp_path: Path) -> None:
    eps, trainer = 0.2, trainer_of(spec_path, tmp_path, label_smoothing=0.2, optimizer={"lr": 1e-9})
    torch.manual_seed(0)
    inputs, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    step_loss, step_logits = trainer.step(inputs, labels)  # the trainer's own step: loss of the task
    loss, logits = float(step_loss.detach()), step_logits.detach().float()
    logp = logits.log_softmax(1)  # smoothing: (1 - eps) on the label, eps spread evenly over the classes
    by_hand = -((1 - eps) * logp.gather(1, labels[:, None])[:, 0] + eps * logp.mean(1)).mean()
    assert loss == pytest.approx(float(by_hand), rel=1e-6)
    assert loss == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=eps)), rel=1e-6)
    assert loss != pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-3)
    # evaluation losses stay plain cross-entropy
    assert float(trainer.task.loss_sum(logits, labels)) == pytest.approx(
        float(F.cross_entropy(logits, labels, reduction="sum")), rel=1e-6)


def test_sgd_is_nesterov_and_groups_take_their_own_lr_and_weight_decay(spec_path: Path, tmp_path: Path) -> None:
    groups = [{"params": "norm", "lr_scale": 4.0, "weight_decay": 0.0}, {"params": "bias", "weight_decay": 0.0}]
    trainer = trainer_of(spec_path, tmp_path, optimizer={"lr": 0.1, "weight_decay": 5e-4, "groups": groups})
    opt, names = trainer.step.optimizer, {id(p): n for n, p in trainer.model.named_parameters()}
    rest, norm, bias = ([names[id(p)] for p in g["params"]] for g in opt.param_groups)
    norms = {n for n, m in trainer.model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert norm and all(n.rsplit(".", 1)[0] in norms for n in norm)  # BatchNorm weights and biases
    assert bias and all(n.endswith(".bias") and n.rsplit(".", 1)[0] not in norms for n in bias)
    assert rest and all(n.endswith(".weight") for n in rest)
    assert len(rest) + len(norm) + len(bias) == len(list(trainer.model.parameters()))
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.1, 5e-4), (0.4, 0.0), (0.1, 0.0)]
    torch.manual_seed(0)
    trainer.step(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))  # the schedule scales every group alike
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] < 0.1 and lrs[1] == pytest.approx(4 * lrs[0]) and lrs[2] == pytest.approx(lrs[0])


EMA = {"decay": 0.8, "every": 3, "ramp": 2.0}


def test_ema_weights_equal_their_definition_and_are_evaluated_and_saved(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import ema as ema_module

    seen: list[tuple[int, dict[str, torch.Tensor]]] = []  # (step, the weights it averages in)
    init, update = ema_module.WeightAverage.__init__, ema_module.WeightAverage.update

    def first(self: ema_module.WeightAverage, cfg: object, model: nn.Module, *args: int) -> None:
        seen.append((0, {k: v.clone() for k, v in model.state_dict().items()}))
        init(self, cfg, model, *args)  # type: ignore[arg-type]

    def each(self: ema_module.WeightAverage, model: nn.Module, step: int) -> None:
        seen.append((step, {k: v.clone() for k, v in model.state_dict().items()}))
        update(self, model, step)

    monkeypatch.setattr(ema_module.WeightAverage, "__init__", first)
    monkeypatch.setattr(ema_module.WeightAverage, "update", each)
    result = train(load_spec(spec_path), config(spec_path, epochs=1, ema=EMA), out=tmp_path / "r", quiet=True,
                   log=print)
    (_, expected), total = seen[0], len(seen) - 1
    assert [s for s, _ in seen] == list(range(total + 1)) and total == 11
    for step, weights in seen[1:]:
        if step % 3 == 0:
            d = 0.8 * (step / total) ** 2
            expected = {k: d * expected[k] + (1 - d) * v if v.is_floating_point() else v for k, v in weights.items()}
    saved, raw = load_weights(tmp_path / "r" / WEIGHTS), load_checkpoint(tmp_path / "r" / CHECKPOINT)
    assert all(torch.allclose(saved[k], expected[k], atol=1e-6) for k in expected)  # BatchNorm buffers included
    assert all(torch.equal(raw["ema"][k], saved[k]) for k in saved)  # the checkpoint holds both
    assert all(torch.equal(raw["model"][k], v) for k, v in seen[-1][1].items())  # the weights as trained
    assert any(not torch.equal(raw["model"][k], saved[k]) for k in saved)
    # the reported test metrics are the average's: evaluate on model.safetensors gives the same
    from training.evaluate import evaluate_run

    evaluated = evaluate_run(tmp_path / "r", tmp_path / "e", weights="final")
    assert evaluated.result["loss"] == pytest.approx(result.test_loss, rel=1e-6)


def test_a_checkpoint_without_the_average_of_an_ema_run_is_refused(spec_path: Path, tmp_path: Path) -> None:
    from training.checkpoint import save_checkpoint

    spec = load_spec(spec_path)
    train(spec, config(spec_path, epochs=1, ema=EMA), out=tmp_path / "r", quiet=True, log=print)
    state = load_checkpoint(tmp_path / "r" / CHECKPOINT)
    del state["ema"]
    save_checkpoint(tmp_path / "r" / CHECKPOINT, {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError) as exc:
        train(spec, config(spec_path, epochs=2, ema=EMA), resume=tmp_path / "r", quiet=True, log=print)
    assert str(exc.value).endswith("lacks the weight average (ema) of a run with training.ema")


def test_interrupted_with_ema_groups_tta_and_alternating_flips_resumes_bit_identically(
    spec_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGINT during step 5 of epoch 2 loses nothing of the weight average, the groups' momentum
    or the flips: final weights (averaged and raw) and metrics equal an uninterrupted run's."""
    augment = {"hflip": True, "hflip_mode": "alternate", "padding_mode": "reflect", "crop_padding": 0.125}
    groups = [{"params": "norm", "lr_scale": 2.0, "weight_decay": 0.0}]
    spec, cfg = load_spec(spec_path), config(spec_path, epochs=3, ema=EMA, tta={"translate": 1},
                                             optimizer={"lr": 0.1, "groups": groups},
                                             dataset={"kind": "digits", "augment": augment})
    train(spec, cfg, out=tmp_path / "straight", quiet=True, log=print)

    steps, add = {"n": 0}, Position.add

    def add_then_signal(self: Position, *args: float) -> None:
        add(self, *args)  # type: ignore[arg-type]
        steps["n"] += 1
        if steps["n"] == 11 + 5:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Position, "add", add_then_signal)
    with pytest.raises(TrainingInterrupted):
        train(spec, cfg, out=tmp_path / "split", quiet=True, log=print)
    monkeypatch.setattr(Position, "add", add)
    train(spec, cfg, resume=tmp_path / "split", quiet=True, log=print)
    assert same_weights(tmp_path / "straight", tmp_path / "split")
    a, b = (load_checkpoint(tmp_path / name / CHECKPOINT) for name in ("straight", "split"))
    assert all(torch.equal(a["model"][k], b["model"][k]) and torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    assert untimed(tmp_path / "split") == untimed(tmp_path / "straight")
