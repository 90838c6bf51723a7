"""Data-parallel training under torchrun: sharding, and equality with a one-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DDP_SPEC
from safetensors.torch import load_file

from builder.lang.loading import load_spec
from training.config import TrainingConfig
from training.distributed import Dist, check_batch_size, epoch_batches, eval_indices
from training.errors import ConfigProblems
from training.runfiles import read_metrics
from training.trainer import train


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_share_each_global_batch_exactly(world: int) -> None:
    single = epoch_batches(Dist(), 64, 16, seed=3, epoch=1)
    ranks = [epoch_batches(Dist(r, world), 64, 16, seed=3, epoch=1) for r in range(world)]
    assert all(len(batches) == len(single) for batches in ranks)
    for k, batch in enumerate(single):
        assert sorted(torch.cat([r[k] for r in ranks]).tolist()) == sorted(batch.tolist())


def test_one_process_order_is_a_seeded_permutation_without_a_lone_last_sample() -> None:
    order = epoch_batches(Dist(), 129, 64, seed=0, epoch=0)
    assert [len(b) for b in order] == [64, 64]  # the 129th sample would make a batch of one
    assert len(torch.cat(order).unique()) == 128
    assert all(torch.equal(a, b) for a, b in zip(order, epoch_batches(Dist(), 129, 64, seed=0, epoch=0)))
    assert not torch.equal(order[0], epoch_batches(Dist(), 129, 64, seed=0, epoch=1)[0])
    assert [len(b) for b in epoch_batches(Dist(), 130, 64, seed=0, epoch=0)] == [64, 64, 2]


def test_set_epoch_gives_every_epoch_another_order() -> None:
    d = Dist(1, 2)
    first, second = (torch.cat(epoch_batches(d, 64, 16, seed=3, epoch=e)) for e in (0, 1))
    assert not torch.equal(first, second)
    assert len(first) == len(second) == 32  # half the samples each epoch, another half of them
    assert torch.equal(first, torch.cat(epoch_batches(d, 64, 16, seed=3, epoch=0)))


def test_test_split_is_covered_once() -> None:
    parts = [torch.cat(eval_indices(Dist(r, 3), 31, 8)) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(31))


def test_global_batch_must_divide_by_the_processes() -> None:
    with pytest.raises(ConfigProblems, match="divisible by the number of processes"):
        check_batch_size(Dist(0, 3), 16)


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path: Path) -> None:
    spec_path = tmp_path / "ddp_tiny.yaml"
    spec_path.write_text(DDP_SPEC)
    spec = load_spec(spec_path)
    single = train(spec, TrainingConfig.model_validate(spec.training), out=tmp_path / "single", quiet=True)

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "builder", "train", str(spec_path), "--out", str(tmp_path / "ddp"), "--quiet"],
        capture_output=True, text=True, timeout=240, env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2/2") == 1  # rank 0 alone prints
    ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    one = load_file(str(single.run_dir / "model.safetensors"))
    assert ddp.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    # Metrics are reduced over both processes: the whole train and test splits, as one process sees them.
    rows = read_metrics(tmp_path / "ddp" / "metrics.csv")
    for row, m in zip(rows, single.history, strict=True):
        assert float(row["test_acc"]) == pytest.approx(m.test_acc, abs=1e-6)
        assert float(row["train_loss"]) == pytest.approx(m.train_loss, rel=1e-4)

    # A one-process run continues the two-process run from its checkpoint, like any other run.
    more = TrainingConfig.model_validate({**(spec.training or {}), "epochs": 3})
    resumed = train(spec, more, resume=tmp_path / "ddp", quiet=True)
    assert resumed.epoch == 3 and len(resumed.history) == 3


def test_collectives_run_on_the_training_gpu_under_nccl_and_on_the_cpu_under_gloo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch.distributed

    from training import distributed

    cuda = torch.device("cuda", 1)
    assert Dist(0, 2).on(cuda, "auto").device == cuda  # nccl cannot reduce CPU tensors
    assert Dist(0, 2).on(cuda, "gloo").device == torch.device("cpu")
    assert Dist(0, 2).on(torch.device("cpu"), "auto").device == torch.device("cpu")
    seen: list[torch.device] = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, op=None: seen.append(t.device))
    monkeypatch.setattr(distributed, "read", lambda t: [0.0] * t.numel())  # a meta tensor cannot be read
    meta = Dist(0, 2, device=torch.device("meta"))  # stands in for a GPU
    distributed.agree(meta, True)
    distributed.total(meta, 1.0, 2.0)
    distributed.total_of(meta, torch.zeros(4))
    assert seen == [torch.device("meta")] * 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK 5 is not below WORLD_SIZE 2"),
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1"}, "LOCAL_RANK=-1 is out of range"),
    ],
)
def test_malformed_launcher_variables_are_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    from training.errors import DistEnvError

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DistEnvError, match=message) as exc:
        Dist.from_env()
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "1e99"])
def test_a_bad_timeout_variable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from training.distributed import timeout
    from training.errors import DistEnvError

    monkeypatch.setenv("BUILDER_DIST_TIMEOUT", value)
    with pytest.raises(DistEnvError, match="must be a number of seconds"):
        timeout()
    monkeypatch.setenv("BUILDER_DIST_TIMEOUT", "12.5")
    assert timeout().total_seconds() == 12.5
