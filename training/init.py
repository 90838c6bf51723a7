"""Fine-tuning: a built model's initial weights from a .safetensors file.

Tensors are matched by name. One whose shape differs (a new head for another class count) keeps
its fresh initialization and is named in the log line; names only the file has, or only the
model has, are errors unless the config allows them; `freeze` stops training parameters under
the given prefixes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.checkpoint import load_weights
from training.config import InitConfig
from training.errors import ConfigProblems

WEIGHTS_FIELD = ("training", "init", "weights")


def init_from(model: nn.Module, config: InitConfig) -> str:
    """Load `config.weights` into `model` as described above; returns the one-line report."""
    path = Path(config.weights)
    if not path.is_file():
        raise ConfigProblems.at(WEIGHTS_FIELD, f"no such file: {path}")
    source, target = load_weights(path, require_checksum=False), model.state_dict()  # weights from elsewhere too
    check_names(source.keys(), target.keys(), config)
    fits = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    fresh = [f"{k} {tuple(target[k].shape)} (file {tuple(v.shape)})" for k, v in source.items()
             if k in target and v.shape != target[k].shape]
    with torch.no_grad():
        for key, value in fits.items():
            target[key].copy_(value)
    frozen = freeze(model, config.freeze)
    parts = [f"init from {path}: {len(fits)} of {len(target)} tensors loaded"]
    if fresh:
        parts.append(f"re-initialized (shape differs): {', '.join(fresh)}")
    if frozen:
        parts.append(f"frozen: {', '.join(config.freeze)} ({frozen:,} parameters)")
    return "; ".join(parts)


def check_names(source: object, target: object, config: InitConfig) -> None:
    ours, theirs = set(target), set(source)  # type: ignore[call-overload]
    problems = []
    if theirs - ours and not config.allow_unexpected:
        problems.append(f"{len(theirs - ours)} tensors of the file are not in the model ({_few(theirs - ours)}); "
                        "set training.init.allow_unexpected: true to ignore them")
    if ours - theirs and not config.allow_missing:
        problems.append(f"{len(ours - theirs)} tensors of the model are not in the file ({_few(ours - theirs)}); "
                        "set training.init.allow_missing: true to keep them as initialized")
    if problems:
        raise ConfigProblems.at(WEIGHTS_FIELD, f"{config.weights}: " + "; ".join(problems))


def _few(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (", ..." if len(names) > 3 else "")


def freeze(model: nn.Module, prefixes: list[str]) -> int:
    """requires_grad False under each prefix (a name or a dotted start of names); count frozen."""
    count = 0
    for prefix in prefixes:
        hit = [p for name, p in model.named_parameters() if name == prefix or name.startswith(f"{prefix}.")]
        if not hit:
            raise ConfigProblems.at(("training", "init", "freeze"), f"no parameters under {prefix!r} in the model")
        for p in hit:
            p.requires_grad_(False)
            count += p.numel()
    return count
