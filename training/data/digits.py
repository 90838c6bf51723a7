"""scikit-learn's bundled 8x8 handwritten digits: 1,797 images, 10 classes, no download."""

from __future__ import annotations

import numpy as np
import torch

from builder.lang.spec import Spec
from training.config import DigitsData
from training.data.splits import Source, TensorSplit, to_channels


def load(config: DigitsData, spec: Spec, workers: int = 0) -> Source:
    """Values 0..16 -> 0..255, with a stratified, seeded train/test split (test_fraction)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))[:, None]  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train, test = train_test_split(
        np.arange(len(labels)), test_size=config.test_fraction, random_state=config.split_seed, stratify=digits.target
    )
    images = to_channels(images, spec.input.channels)
    split = [TensorSplit(images[torch.from_numpy(i)], labels[torch.from_numpy(i)]) for i in (train, test)]
    return Source("digits", split[0], None, split[1], tuple(str(i) for i in range(10)))
