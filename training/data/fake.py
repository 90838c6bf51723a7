"""torchvision's FakeData: random images and labels at the spec's input size (smoke tests)."""

from __future__ import annotations

from typing import Any

import torch

from builder.lang.spec import Spec
from training.config import FakeData
from training.data.splits import Source, TensorSplit


def load(config: FakeData, spec: Spec, workers: int = 0) -> Source:
    """train_size images, then test_size more (the test images follow the train ones)."""
    from torchvision.datasets import FakeData as TorchvisionFake

    classes = config.num_classes or spec.num_classes
    shape = (spec.input.channels, spec.input.height, spec.input.width)
    train = TorchvisionFake(config.train_size, shape, classes)
    test = TorchvisionFake(config.test_size, shape, classes, random_offset=config.train_size)
    return Source("fake", decode_all(train), None, decode_all(test), tuple(str(i) for i in range(classes)))


def decode_all(dataset: Any) -> TensorSplit:
    """A dataset of (PIL image, label) decoded once into memory."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    pairs = [(pil_to_tensor(image), int(label)) for image, label in dataset]
    return TensorSplit(torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs], dtype=torch.int64))
