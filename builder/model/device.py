"""Which device a name means on this machine: the one choice that every command with a
--device flag makes (train, sweep, evaluate, predict, bench, summarize)."""

from __future__ import annotations

import torch

from builder.lang.errors import BuilderError


class DeviceError(BuilderError):
    """A device name that does not parse, or a device this machine does not have."""


def find_device(name: str, *, real: bool = False) -> torch.device:
    """The one device choice: 'auto' is cuda, then mps, then cpu; any other name must parse and
    exist on this machine (DeviceError otherwise). `real`: the command computes on real data, so
    the meta device (shapes only, no values) is refused."""
    if real and name.split(":")[0] == "meta":
        raise DeviceError(f"{name} holds shapes but no values; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        mps = torch.backends.mps.is_available()
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device '{name}'; expected auto, cpu, cuda, cuda:N or mps") from None
    present = {"cpu": True, "meta": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    cuda_ok = device.type != "cuda" or (device.index or 0) < torch.cuda.device_count()
    if not (present.get(device.type, False) and cuda_ok):
        raise DeviceError(f"{name} is not available here; use auto or cpu")
    return device
