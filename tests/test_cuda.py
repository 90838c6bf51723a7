"""The GPU path: training, precision, the GPU-resident dataset, exact resume, summarize and NCCL on CUDA.

Every test is parametrized over a device: "cpu" runs here (so the test code itself is exercised on
a CPU-only machine) and "cuda" is marked `cuda` and skipped without a GPU. On a GPU machine,
`pytest -m cuda tests/test_cuda.py` runs the CUDA half alone (benchmarks/gpu_check.sh does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Deterministic cuBLAS needs this before its first use in the process (collection comes first).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest
import torch
from conftest import DDP_SPEC, SPECS

from builder.lang.loading import load_spec
from training import TrainingConfig, train
from training.checkpoint import CHECKPOINT, WEIGHTS, load_checkpoint, load_weights
from training.data import load_data, on_device
from training.device import select_device
from training.precision import resolve_precision
from training.trainer import Trainer

HAS_CUDA = torch.cuda.is_available()
CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")])
DEVICES = ["cpu", CUDA]
needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]

# 3x16x16, avg pooling only: every op of its backward has a deterministic CUDA kernel (max
# pooling's backward does not), so a resumed run can be asked to match bit for bit.
TINY = """\
name: tiny_gpu
input: {channels: 3, height: 16, width: 16}
num_classes: 4
defaults: {norm: {kind: batchnorm}, pool: {kind: avg, kernel_size: 2, stride: 2}}
blocks:
  - {out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}
  - {out_channels: 16, kernel_size: 3, padding: 1, pool_and_norm: true}
classifier: {hidden: [32], dropout: 0.2}
training:
  dataset: {kind: fake, train_size: 320, test_size: 64}
  epochs: 2
  batch_size: 64
  optimizer: {kind: sgd, lr: 0.05}
  schedule: {kind: cosine}
  seed: 5
"""


def shipped(name: str, device: str, **changes: Any) -> tuple[Any, TrainingConfig]:
    """A shipped spec with its recipe cut to one short epoch on fake data at its input size."""
    spec = load_spec(SPECS / f"{name}.yaml")
    recipe = {**(spec.training or {}), "epochs": 1, "batch_size": 32, "workers": 0, "device": device,
              "dataset": {"kind": "fake", "train_size": 64, "test_size": 16}, **changes}
    return spec, TrainingConfig.model_validate(recipe)


def tiny(tmp_path: Path, device: str, **changes: Any) -> tuple[Any, TrainingConfig]:
    path = tmp_path / "tiny_gpu.yaml"
    path.write_text(TINY)
    spec = load_spec(path)
    return spec, TrainingConfig.model_validate({**(spec.training or {}), "device": device, **changes})


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_weights(a / WEIGHTS), load_weights(b / WEIGHTS)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --- training on the device, in every precision and layout ----------------------------------

OPTIONS = {  # name: (shipped spec, config changes)
    "fp32": ("alexnet_digits", {"precision": "fp32"}),
    "bf16": ("alexnet_digits", {"precision": "bf16"}),
    "fp16": ("alexnet_digits", {"precision": "fp16"}),
    "channels_last": ("resnet20_cifar", {"precision": "fp32", "channels_last": True}),
    "compile": ("alexnet_digits", {"precision": "fp32", "compile": True}),
}
# fp16 needs a GPU (refused on the CPU, tested below); inductor compiles take minutes on 2 cores.
CPU_OPTIONS = ("fp32", "channels_last")  # bf16 on the CPU: tests/test_trainer.py, test_bench.py
CASES = [pytest.param("cpu", o, id=f"cpu-{o}") for o in CPU_OPTIONS] + [
    pytest.param("cuda", o, id=f"cuda-{o}", marks=needs_cuda) for o in OPTIONS
]


@pytest.mark.parametrize(("device", "option"), CASES)
def test_shipped_spec_trains_on_the_device(device: str, option: str, tmp_path: Path) -> None:
    name, changes = OPTIONS[option]
    spec, config = shipped(name, device, **changes)
    lines: list[str] = []
    if option == "compile":
        torch._dynamo.reset()
    result = train(spec, config, out=tmp_path / "run", quiet=True, log=lines.append)
    assert f"on {device}" in lines[0]  # the banner names the device the run computes on
    m = result.history[-1]
    assert all(v is not None and v == v and abs(v) < 1e3 for v in (m.train_loss, m.val_loss, m.test_loss))
    assert not same_weights_as_init(spec, config, tmp_path / "run")  # the optimizer stepped
    scaler = load_checkpoint(tmp_path / "run" / CHECKPOINT)["scaler"]
    # GradScaler is on for fp16 alone: its state (the loss scale) is saved then, and nothing otherwise.
    assert ("scale" in scaler) == (option == "fp16")
    if option == "compile":
        from torch._dynamo.utils import counters

        assert counters["stats"]["unique_graphs"] > 0  # torch.compile really traced the model


def same_weights_as_init(spec: Any, config: TrainingConfig, run: Path) -> bool:
    from builder.model.build import build_model
    from training.device import seed_everything

    seed_everything(config.seed)  # as the trainer does before building
    init = build_model(spec).state_dict()
    trained = load_weights(run / WEIGHTS)
    return all(torch.equal(init[k].float(), trained[k].float()) for k in init if init[k].is_floating_point())


def test_fp16_is_refused_on_the_cpu() -> None:
    _, config = shipped("alexnet_digits", "cpu", precision="fp16")
    with pytest.raises(Exception, match="fp16 needs a GPU"):
        select_device(config)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_picks_the_gpu_when_present_and_precision_auto_follows_it(device: str) -> None:
    config = TrainingConfig.model_validate({"device": "auto", "precision": "auto"})
    picked = select_device(config)
    if device == "cuda":
        assert picked.type == "cuda"
        bf16 = torch.cuda.is_bf16_supported()
        assert resolve_precision(config, picked).precision == ("bf16" if bf16 else "fp32")
    else:
        assert picked.type == ("cuda" if HAS_CUDA else "mps" if torch.backends.mps.is_available() else "cpu")
        assert resolve_precision(config, torch.device("cpu")).precision in ("bf16", "fp32")


# --- the dataset lives on the GPU: no image crosses the bus per step -------------------------


def host_to_device_bytes(trace: dict[str, Any]) -> int:
    """Bytes copied host -> device in a torch.profiler Chrome trace (its gpu_memcpy events)."""
    events = trace.get("traceEvents", [])
    return sum(int(e.get("args", {}).get("bytes", 0)) for e in events
               if e.get("cat") == "gpu_memcpy" and "HtoD" in str(e.get("name", "")))


def test_host_to_device_bytes_reads_memcpy_events_only() -> None:
    trace = {"traceEvents": [
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "args": {"bytes": 512}},
        {"cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pageable)", "args": {"bytes": 4096}},
        {"cat": "kernel", "name": "HtoD-looking kernel", "args": {"bytes": 99}},
        {"cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "args": {"bytes": 8}},
    ]}
    assert host_to_device_bytes(trace) == 520


def profiled_run(trainer: Trainer, path: Path) -> int:
    """Host -> device bytes while `trainer` trains its epochs (model and data already placed)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        trainer.run()
        torch.cuda.synchronize()
    prof.export_chrome_trace(str(path))
    return host_to_device_bytes(json.loads(path.read_text()))


@pytest.mark.parametrize("device", [CUDA])
def test_dataset_on_the_gpu_copies_no_images_per_step(device: str, tmp_path: Path) -> None:
    spec, config = tiny(tmp_path, device, epochs=1)
    dev = torch.device(device)
    loaded = load_data(config.dataset, spec, 0)
    runs: dict[str, int] = {}
    for name, data in (("resident", on_device(loaded, dev)), ("host", loaded)):
        assert (data.train.images.device.type == "cuda") == (name == "resident")  # type: ignore[attr-defined]
        (tmp_path / name).mkdir()
        trainer = Trainer(spec, config, data, dev, tmp_path / name, True, lambda _: None)
        runs[name] = profiled_run(trainer, tmp_path / f"{name}.json")
    images = loaded.train.images  # type: ignore[attr-defined]
    batch_bytes = images[: config.batch_size].numel() * images.element_size()
    steps = len(images) // config.batch_size
    # The control proves the profiler sees copies: host-held data sends every batch across.
    assert runs["host"] >= steps * batch_bytes, runs
    # Resident data: only indices, flags and RNG offsets (bytes per step), less than one batch in all.
    assert runs["resident"] < batch_bytes, runs


# --- exact resume -----------------------------------------------------------------------------


@pytest.fixture
def deterministic() -> Iterator[list[warnings.WarningMessage]]:
    """Deterministic kernels (cuDNN, cuBLAS) for the test; the nondeterministic ops it met."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


# The recipe features' state on the device (the CPU case: tests/test_trainer.py)
RECIPE = {
    "ema": {"decay": 0.9, "every": 2, "ramp": 2.0}, "tta": {"translate": 1},
    "optimizer": {"kind": "sgd", "lr": 0.05, "groups": [{"params": "norm", "lr_scale": 2.0, "weight_decay": 0.0}]},
    "dataset": {"kind": "fake", "train_size": 320, "test_size": 64,
                "augment": {"hflip_mode": "alternate", "padding_mode": "reflect"}},
}
RESUMED = [pytest.param("cpu", {}, id="cpu"), pytest.param("cuda", {}, id="cuda", marks=needs_cuda),
           pytest.param("cuda", RECIPE, id="cuda-ema-tta-groups", marks=needs_cuda)]


@pytest.mark.parametrize(("device", "recipe"), RESUMED)
def test_interrupted_and_resumed_run_is_bit_identical(
    device: str, recipe: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    deterministic: list[warnings.WarningMessage],
) -> None:
    """Stopped mid epoch 2 (dropout, augmentation, cosine schedule; the weight average, groups,
    TTA and alternating flips with `recipe`), resumed: the same weights."""
    import signal

    from training.errors import TrainingInterrupted
    from training.trainer import Position

    spec, config = tiny(tmp_path, device, threads=1, **recipe)
    train(spec, config, out=tmp_path / "straight", quiet=True, log=lambda _: None)
    add, count = Position.add, {"n": 0}

    def add_then_signal(self: Position, *args: Any) -> None:
        add(self, *args)
        count["n"] += 1
        if count["n"] == 5 + 2:  # 5 steps an epoch (288 train images after validation: 4 x 64 + 32)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Position, "add", add_then_signal)
    with pytest.raises(TrainingInterrupted):
        train(spec, config, out=tmp_path / "split", quiet=True, log=lambda _: None)
    assert load_checkpoint(tmp_path / "split" / CHECKPOINT)["position"]["step"] == 2
    monkeypatch.setattr(Position, "add", add)
    train(spec, config, resume=tmp_path / "split", quiet=True, log=lambda _: None)
    met = sorted({str(w.message).splitlines()[0] for w in deterministic if "determinis" in str(w.message)})
    assert same_weights(tmp_path / "straight", tmp_path / "split"), f"nondeterministic ops met: {met}"


# --- summarize --------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_summarize_on_the_device(device: str, cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = cli("summarize", SPECS / "resnet20_cifar.yaml", "--device", device)
    assert code == 0, err
    assert "resnet20_cifar:" in out and "parameters" in out and "Traceback" not in err


# --- collectives: NCCL reduces tensors on the GPU -----------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_collectives_reduce_device_tensors_under_the_backend_auto_picks(
    device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real one-process group (nccl on CUDA, gloo on the CPU); the trainer's reductions run on
    the tensors' device. (A one-process torchrun job makes no group at all: world 1 is local.)"""
    import torch.distributed as dist

    from training import distributed
    from training.distributed import Dist, backend_for

    dev = torch.device(device, 0) if device == "cuda" else torch.device(device)
    backend = backend_for(dev, "auto")
    assert backend == ("nccl" if device == "cuda" else "gloo")
    if device == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        seen: list[torch.device] = []
        reduce = dist.all_reduce

        def recording(t: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> Any:
            seen.append(t.device)
            return reduce(t, op)

        monkeypatch.setattr(dist, "all_reduce", recording)
        d = Dist(0, 2).on(dev, "auto")  # world 2 so the reductions run; the group has one rank
        assert distributed.agree(d, False, True) == (False, True)
        assert distributed.total(d, 1.5, 2.0) == (1.5, 2.0)
        assert distributed.total_of(d, torch.tensor([3.0, 4.0], device=dev)) == [3.0, 4.0]
        assert seen == [dev] * 3
    finally:
        dist.destroy_process_group()



@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="a two-process NCCL job needs two GPUs")
def test_torchrun_two_gpus_train_like_one(tmp_path: Path) -> None:
    path = tmp_path / "ddp_tiny.yaml"
    path.write_text(DDP_SPEC)
    spec = load_spec(path)
    config = TrainingConfig.model_validate({**(spec.training or {}), "device": "cuda"})
    single = train(spec, config, out=tmp_path / "single", quiet=True, log=lambda _: None)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "builder",
         "train", str(path), "--device", "cuda", "--out", str(tmp_path / "ddp"), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on cuda:0" in proc.stdout  # rank 0's banner: each rank trains on its own GPU
    ddp, one = load_weights(tmp_path / "ddp" / WEIGHTS), load_weights(single.run_dir / WEIGHTS)
    for name in one:  # NCCL's reduction order differs from one process's sums
        torch.testing.assert_close(ddp[name].float(), one[name].float(), rtol=1e-3, atol=1e-4, msg=name)
