"""`precision: auto`: a rule derived from measurements, not a belief.

`python -m builder bench` measured training steps of AlexNets at batch 128 on a 2-core AMD EPYC
(Zen 4, AVX512-BF16) with torch 2.14: bf16 autocast ran 1.57x (alexnet_cifar.yaml) and 1.71x
(alexnet.yaml) the images/s of fp32. bf16 pays off where the hardware computes it natively and
costs time where it is emulated, so auto takes bf16 on a CPU with AVX512-BF16 or AMX and on a
CUDA GPU that supports bf16, fp16 (with its gradient scaler) on a CUDA GPU without bf16, where
half precision still runs on tensor cores, and fp32 everywhere else. Bench now times the trainer's step itself
(training.step), and re-measured with it on the same machine, idle (2026-11-29,
`python -m builder bench alexnet_cifar --options fp32,bf16 --batch-size 128 --steps 5 --warmup 2
--repeats 3`), bf16 ran 1.71x fp32 (1,836 vs 1,075 images/s): the rule holds for exactly what
`train` runs. The same command checks it on any machine.
"""

from __future__ import annotations

import torch

from training.config import TrainingConfig


def native_bf16(device: torch.device) -> bool:
    """Does this device compute bfloat16 in hardware (CPU: AVX512-BF16 or AMX; CUDA: bf16 support)?"""
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return False


def resolve_precision(config: TrainingConfig, device: torch.device) -> TrainingConfig:
    """`config` with precision auto replaced by bf16, fp16 or fp32 for `device`; others unchanged."""
    if config.precision != "auto":
        return config
    return config.model_copy(update={"precision": auto_precision(device)})


def auto_precision(device: torch.device) -> str:
    """What `precision: auto` means on `device` (the rule in this module's docstring)."""
    if native_bf16(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else "fp32"
