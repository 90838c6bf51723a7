"""Atomic checkpoints and weights, loaded without ever running pickled code.

`checkpoint.pt` (torch.save) holds everything a run needs to continue exactly: model,
optimizer, scheduler and grad-scaler states, every RNG state, the position (epoch, step) and
the metrics so far. It holds tensors and plain data only, so `torch.load(weights_only=True)`
reads it; a file that asks to build any other object is refused, never executed.
`model.safetensors` (and best.safetensors) hold weights under the built model's state_dict keys,
with a checksum of every tensor in the file's metadata, verified before the weights are used.
File names and the structure of a checkpoint's contents: training/runfiles.py.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from builder.lang.files import atomic_write, write_bytes
from training.errors import CheckpointError
from training.runfiles import CHECKPOINT, WEIGHTS, check_checkpoint, open_regular, read_bytes

__all__ = ["CHECKPOINT", "WEIGHTS", "checksum", "load_checkpoint", "load_weights", "read_checkpoint", "rng_states",
           "save_checkpoint", "save_weights", "set_rng_states"]

FORMAT = "cnn-builder-checkpoint"
VERSION = 2  # 2: with a checksum of everything it holds
CHECKSUM = "checksum"  # the metadata key of a weights file's checksum
MAX_WEIGHTS_HEADER = 100 * 2**20  # safetensors' own limit on its JSON header


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically, with a checksum of every tensor and value, verified by load_checkpoint."""
    full = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda f: torch.save({**full, "checksum": checksum(full)}, f))


def checksum(value: Any) -> str:
    """A digest of a tree of dicts, lists, tensors (dtype, shape and bytes) and plain values."""
    digest = hashlib.blake2b(digest_size=16)
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(repr(value).encode())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, read with weights_only=True; anything else is a CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with open_regular(path, CheckpointError) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of foreign files
            state = torch.load(f, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        what = _unpickler_reason(str(exc))
        raise CheckpointError(
            f"refused {path}: it holds pickled objects other than tensors and plain data, which could run "
            f"code on loading; it is not loaded ({what})"
        ) from None
    except Exception as exc:  # torch raises many kinds on a truncated or foreign file
        why = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CheckpointError(f"cannot read {path}: damaged or not a checkpoint ({why})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this trainer")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this trainer reads {VERSION}")
    stored = state.pop("checksum", None)
    if stored != checksum(state):
        raise CheckpointError(f"{path} is damaged: its contents do not match its checksum (a changed bit, or an "
                              "edited field); it is not loaded")
    return state


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights_only error that says what was refused (e.g. GLOBAL posix.system)."""
    lines = [line.strip() for line in message.split("\n\n", 1)[-1].splitlines()]
    boilerplate = ("Check the documentation", "Please file an issue", "Weights only load failed")
    return " ".join(line for line in lines if line and not line.startswith(boilerplate))


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model's state_dict as safetensors (contiguous CPU copies) with their checksum, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = safetensors_bytes(tensors, metadata={**(metadata or {}), CHECKSUM: checksum(tensors)})
    write_bytes(path, data)


def load_weights(path: Path, require_checksum: bool = True) -> dict[str, Tensor]:
    """A .safetensors file's tensors, its checksum verified; a file without one (weights from
    elsewhere, e.g. port-weights) is accepted only when not `require_checksum` (a run's own are)."""
    data = read_bytes(path, 2**40, CheckpointError)
    try:
        tensors, metadata = dict(sorted(safetensors_load(data).items())), _metadata(data)  # by name, as load_file
    except Exception as exc:  # safetensors raises its own kinds on a truncated or foreign file
        raise CheckpointError(f"cannot read weights {path}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    stored = metadata.get(CHECKSUM)
    if stored is None and require_checksum:
        raise CheckpointError(f"{path} has no checksum: not weights a run of this trainer wrote; they are not used")
    if stored is not None and stored != checksum(tensors):
        raise CheckpointError(f"{path} is damaged: its tensors do not match their checksum (a changed bit, or an "
                              "edited file); they are not used")
    return tensors


def _metadata(data: bytes) -> dict[str, str]:
    """The __metadata__ of a safetensors file (an 8-byte little-endian header size, then JSON)."""
    size = int.from_bytes(data[:8], "little")
    if size > min(MAX_WEIGHTS_HEADER, len(data) - 8):
        raise ValueError("the header is larger than the file")
    meta = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not a mapping")
    return meta


# --- RNG states ----------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """Every global RNG (torch CPU and CUDA, Python, NumPy) as tensors and plain data."""
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {**np_state, "state": {**np_state["state"], "key": np_state["state"]["key"].tolist()}},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = states["numpy"]
    key = np.array(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**np_state, "state": {**np_state["state"], "key": key}})


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The run's checkpoint (checksum verified) with every part's structure checked
    (runfiles.check_checkpoint); each problem is one CheckpointError line."""
    path = run_dir / CHECKPOINT
    state = load_checkpoint(path)
    check_checkpoint(state, path)
    return state
