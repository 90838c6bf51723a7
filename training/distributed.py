"""Data-parallel training under torchrun: process group, sharded batches, agreed stops, reductions.

`torchrun --nproc_per_node=N -m builder train SPEC` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; `Dist.from_env()` reads them. Without them the
run is a single process (world 1) and nothing here talks to anyone.

The configured batch size is the global batch: each of the N ranks takes batch_size / N of
every global batch, as DistributedSampler assigns them, so N processes take the same
optimizer steps on the same samples as one process would (DDP averages the gradients).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DistributedSampler

from training.errors import ConfigProblems, DistEnvError, TrainingFailed

CPU = torch.device("cpu")
TIMEOUT_ENV = "BUILDER_DIST_TIMEOUT"  # seconds a collective may wait for a silent peer (default 300)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank `rank` of `world` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # Where collectives' tensors live: the training GPU under NCCL (which cannot reduce CPU
    # tensors), else the CPU (gloo). Set by `on` once the device and backend are known.
    device: torch.device = CPU

    def on(self, device: torch.device, backend: str) -> Dist:
        """This Dist with its collectives on `device` when the backend is NCCL, else on the CPU."""
        nccl = backend_for(device, backend) == "nccl"
        return replace(self, device=device if nccl else CPU)

    @property
    def main(self) -> bool:
        """Rank 0 alone prints and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls) -> Dist:
        """The ranks torchrun (or any launcher using its variables) gave this process."""
        world = _env_int("WORLD_SIZE", "1", 1)
        if world <= 1:
            return cls()
        if "RANK" not in os.environ:
            raise DistEnvError("WORLD_SIZE is set but RANK is not: start distributed runs with torchrun")
        rank, local = _env_int("RANK", None, 0), _env_int("LOCAL_RANK", "0", 0)
        if rank >= world:
            raise DistEnvError(f"RANK {rank} is not below WORLD_SIZE {world}")
        return cls(rank, world, local)


def _env_int(name: str, default: str | None, least: int) -> int:
    """An integer environment variable of the launcher, or one clear error (exit 2)."""
    text = os.environ.get(name, default or "")
    try:
        value = int(text)
    except ValueError:
        raise DistEnvError(f"{name}={text!r} is not an integer") from None
    if not least <= value < 2**31:
        raise DistEnvError(f"{name}={value} is out of range (at least {least})")
    return value


def timeout() -> timedelta:
    """How long a collective may wait for a silent peer before the job fails instead of hanging."""
    text = os.environ.get(TIMEOUT_ENV, "300")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= 7 * 24 * 3600:
        raise DistEnvError(f"{TIMEOUT_ENV}={text!r} must be a number of seconds between 0 and 604800")
    return timedelta(seconds=seconds)


def device_for(d: Dist, device: torch.device) -> torch.device:
    """Each rank's own GPU (cuda:LOCAL_RANK) when training on CUDA; the device as it is otherwise."""
    if d.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", d.local_rank)
    return device


def backend_for(device: torch.device, choice: str) -> str:
    """nccl for CUDA, gloo otherwise, unless the config names one."""
    if choice != "auto":
        return choice
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(d: Dist, device: torch.device, backend: str) -> Iterator[None]:
    """Join the job's process group for the duration of the run; leave it on every exit path."""
    if not d.enabled:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend_for(device, backend), timeout=timeout())
    except (RuntimeError, ValueError) as exc:
        raise TrainingFailed(f"rank {d.rank}: cannot join the process group: {_first_line(exc)}") from None
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as exc:
        cause = _peer_failure(exc)
        if cause is None:
            raise
        raise TrainingFailed(f"rank {d.rank}: another process of the job {cause}; ending this one") from None
    finally:
        dist.destroy_process_group()


def broadcast_path(d: Dist, make: Callable[[], Path]) -> Path:
    """`make()` on rank 0, the same path on every rank (a default run name holds a timestamp)."""
    if not d.enabled:
        return make()
    box = [str(make()) if d.main else None]
    dist.broadcast_object_list(box, src=0)
    return Path(str(box[0]))


def check_batch_size(d: Dist, batch_size: int) -> None:
    if batch_size % d.world:
        raise ConfigProblems.at(
            ("training", "batch_size"),
            f"the global batch ({batch_size}) must be divisible by the number of processes ({d.world})",
        )


def epoch_batches(d: Dist, n: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """This rank's index batches of epoch `epoch`: DistributedSampler, shuffled by (seed, epoch).

    Rank r holds samples r, r + N, ... of the epoch's permutation, so its k-th batch of
    batch_size / N samples and the other ranks' k-th batches make up exactly the k-th global
    batch of a one-process run. A last batch of one sample per rank is dropped (BatchNorm).
    """
    indices: Any = range(n)  # the sampler only needs len() of its "dataset"
    sampler: DistributedSampler[int] = DistributedSampler(indices, num_replicas=d.world, rank=d.rank, shuffle=True,
                                                          seed=seed)
    sampler.set_epoch(epoch)  # a new permutation every epoch, the same on every rank
    batches = list(torch.tensor(list(sampler), dtype=torch.long).split(batch_size // d.world))
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) == 1 else batches


def eval_indices(d: Dist, n: int, batch_size: int) -> list[Tensor]:
    """This rank's share of the test split (every sample exactly once over all ranks)."""
    return list(torch.arange(d.rank, n, d.world).split(batch_size))


def agree(d: Dist, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true if it is true on any rank (one small all-reduce), so all ranks act alike."""
    if not d.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in read(t))


def total(d: Dist, *values: float) -> tuple[float, ...]:
    """Each value summed over all ranks (float64, so counts stay exact)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return tuple(read(t))


def total_of(d: Dist, t: Tensor) -> list[float]:
    """A tensor of values (on the training device) summed over all ranks and read once: the
    step's single host synchronization."""
    if d.enabled:
        t = t.to(d.device)
        dist.all_reduce(t)
    return read(t)


def read(t: Tensor) -> list[float]:
    """The values of a tensor on the host (one synchronization with its device)."""
    return [float(v) for v in t.tolist()]


def _peer_failure(exc: BaseException) -> str | None:
    """What a collective's error says happened to the other processes, if it is about them."""
    text = str(exc).lower()
    if "timed out" in text or "timeout" in text:
        return f"went silent for {timeout().total_seconds():.0f} s ({TIMEOUT_ENV})"
    if any(s in text for s in ("connection closed", "connection reset", "broken pipe", "by peer")):
        return "stopped or died (its connection closed)"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
