"""conv `init: whiten`: the trainer fits each WhiteningConv2d (builder.model.blocks) to its input
on training images before the first step of a fresh run (a resumed run, or one started from
`init` weights, has its filters already)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from builder.model.blocks import WhiteningConv2d
from training.data.augment import generator
from training.data.splits import Split

SAMPLE = 5000  # training images whose patches are counted (airbench94's 5,000)
WHITEN_STREAM = -2  # generator(seed, WHITEN_STREAM) picks them: never a (seed, epoch, step) of a batch


class _AllFitted(Exception):
    """Raised by the last conv's hook: the rest of the forward pass is not needed."""


def fit_whitening(model: nn.Module, split: Split, preprocess: Callable[[Tensor], Tensor], seed: int,
                  device: torch.device) -> int:
    """Fit every whitening conv of `model`, in forward order, to its input when the model (in eval
    mode) runs on up to SAMPLE training images, normalized without augmentation and chosen by
    `seed`; how many were fitted."""
    convs = [m for m in model.modules() if isinstance(m, WhiteningConv2d)]
    if not convs:
        return 0
    chosen = torch.randperm(len(split), generator=generator(seed, WHITEN_STREAM))[:SAMPLE]
    images, _ = next(iter(split.batches([chosen])))
    fitted: list[nn.Module] = []

    def fit(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        assert isinstance(module, WhiteningConv2d)
        module.fit(args[0])  # then the forward goes on with the fitted filters, to the next one
        fitted.append(module)
        if len(fitted) == len(convs):
            raise _AllFitted

    hooks, training = [c.register_forward_pre_hook(fit) for c in convs], model.training
    try:
        with torch.no_grad():
            model.eval()(preprocess(images.to(device)))
    except _AllFitted:
        pass
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return len(fitted)
