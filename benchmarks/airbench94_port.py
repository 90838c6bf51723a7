"""A faithful CPU port of airbench94: the fastest published CIFAR-10 recipe, as plain PyTorch.

    python benchmarks/airbench94_port.py [--seed 0] [--epochs 9.9] [--data-root DIR] [--json FILE]

Follows `airbench94.py` of Keller Jordan's cifar10-airbench (github.com/KellerJordan/cifar10-airbench,
which builds on hlb-CIFAR10 and Myrtle's ResNet-9; paper: "94% on CIFAR-10 in 3.29 seconds on a
single GPU", arXiv:2404.00498). Published: 94.01% mean test accuracy (with its test-time
augmentation) in 3.29 s on one A100, 9.9 epochs at batch 1024, about 0.36 PFLOPs of training.

What is the same: the network (a 2x2 whitening conv initialized from the patch covariance of 5,000
training images and frozen, its bias trained for 3 epochs; three conv groups of widths 64, 256,
256, each conv-pool-BN-GELU-conv-BN-GELU with BatchNorm weights frozen at 1, eps 1e-12, momentum
0.6, and the convs' first filters Dirac-initialized; a 3x3 max pool, a bias-free linear head
scaled by 1/9), the data handling (normalized once, 2-pixel translations of reflect-padded
images, every image flipped on alternate epochs from a random flip drawn once), the optimizer
(SGD with Nesterov momentum 0.85 on the summed label-smoothed (0.2) loss, its lr 11.5 and weight
decay 0.0153 per 1024 examples decoupled from the momentum, BatchNorm biases at 64x the lr), the
triangular schedule (0.2 -> 1 at 23% of the steps -> 0.07), the lookahead every 5 steps with a
cubic ramp of its decay toward 0.95^5, and the test-time augmentation (level 2: mirror, and
1-pixel translations of the reflect-padded images).

What differs, for the CPU: fp32 and channels-last instead of fp16 on CUDA (a CPU without native
bf16 emulates it about 500x slower than fp32 here), the images decoded from CIFAR-10's JPEGs
(ImageFolder layout; torchvision's binary batches are not on this machine), and, so the time to
each accuracy can be read, a test evaluation (with the test-time augmentation) at every epoch's
end. As airbench times itself, the reported seconds are training only: the whitening
initialization and the training steps, never the evaluations; images/s is training images per
such second.

No code of this project is used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

MEAN = torch.tensor((0.4914, 0.4822, 0.4465))
STD = torch.tensor((0.2470, 0.2435, 0.2616))
HYP = {
    "epochs": 9.9, "batch_size": 1024, "lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153,
    "bias_scaler": 64.0, "label_smoothing": 0.2, "whiten_bias_epochs": 3, "translate": 2,
    "widths": (64, 256, 256), "batchnorm_momentum": 0.6, "scaling_factor": 1 / 9,
}
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


# --- data -------------------------------------------------------------------------------------


def load_split(root: Path, split: str, cache: Path) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 3, 32, 32) and int64 labels of ROOT/split/<class>/*.jpg (cached as .npy)."""
    images_file, labels_file = cache / f"{split}_images.npy", cache / f"{split}_labels.npy"
    if not images_file.exists():
        classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / split / c).glob("*.jpg"))]
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
        cache.mkdir(parents=True, exist_ok=True)
        np.save(labels_file, np.array([i for _, i in files], dtype=np.int64))
        np.save(images_file, images)
    images = torch.from_numpy(np.load(images_file, allow_pickle=False)).permute(0, 3, 1, 2).contiguous()
    return images, torch.from_numpy(np.load(labels_file, allow_pickle=False))


def normalize(images: Tensor) -> Tensor:
    return (images.float() / 255 - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def batch_flip_lr(images: Tensor) -> Tensor:
    flip = (torch.rand(len(images)) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


def batch_crop(images: Tensor, size: int) -> Tensor:
    """A random size x size crop of each (padded) image: airbench's translation."""
    r = (images.size(-1) - size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(images), 2))
    out = torch.empty(len(images), images.size(1), size, size, dtype=images.dtype)
    for sx in range(-r, r + 1):
        for sy in range(-r, r + 1):
            mask = (shifts[:, 0] == sx) & (shifts[:, 1] == sy)
            out[mask] = images[mask, :, r + sy : r + sy + size, r + sx : r + sx + size]
    return out


class TrainLoader:
    """airbench's CifarLoader for training: normalized, flipped and padded once, then per epoch a
    fresh translation, every image flipped on odd epochs, and a fresh order; last partial batch dropped."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int) -> None:
        self.labels, self.batch_size, self.epoch = labels, batch_size, 0
        flipped = batch_flip_lr(normalize(images))
        pad = HYP["translate"]
        self.padded = F.pad(flipped, (pad,) * 4, "reflect")
        self.size = images.shape[-1]

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        images = batch_crop(self.padded, self.size)
        if self.epoch % 2 == 1:
            images = images.flip(-1)
        self.epoch += 1
        order = torch.randperm(len(images))
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield images[idx].contiguous(memory_format=torch.channels_last), self.labels[idx]


# --- the network ------------------------------------------------------------------------------


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int, momentum: float, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = False  # frozen at 1: only the bias trains


class Conv(nn.Conv2d):
    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__(channels_in, channels_out, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])  # the first in_channels filters pass their input through


class ConvGroup(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, momentum: float) -> None:
        super().__init__()
        self.conv1, self.pool = Conv(channels_in, channels_out), nn.MaxPool2d(2)
        self.norm1, self.conv2 = BatchNorm(channels_out, momentum), Conv(channels_out, channels_out)
        self.norm2, self.activ = BatchNorm(channels_out, momentum), nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


class Mul(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def make_net() -> nn.Sequential:
    w1, w2, w3 = HYP["widths"]
    m, whiten_width = HYP["batchnorm_momentum"], 2 * 3 * 2**2
    net = nn.Sequential(
        nn.Conv2d(3, whiten_width, 2, padding=0, bias=True), nn.GELU(),
        ConvGroup(whiten_width, w1, m), ConvGroup(w1, w2, m), ConvGroup(w2, w3, m),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(w3, 10, bias=False), Mul(HYP["scaling_factor"]),
    )
    net[0].weight.requires_grad = False
    return net.to(memory_format=torch.channels_last)


def init_whitening_conv(layer: nn.Conv2d, images: Tensor, eps: float = 5e-4) -> None:
    """The conv's filters: the eigenvectors of the patch covariance, scaled to unit variance, and their negatives."""
    c, (h, w) = images.shape[1], layer.weight.shape[2:]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
    flat = patches.view(len(patches), -1)
    eigenvalues, eigenvectors = torch.linalg.eigh(flat.T @ flat / len(flat), UPLO="U")
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)  # largest first
    eigenvectors = eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((scaled, -scaled))


class Lookahead:
    """airbench's LookaheadState: the average follows the weights, and the weights are reset to it."""

    def __init__(self, net: nn.Module) -> None:
        self.ema = {k: v.clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: nn.Module, decay: float) -> None:
        for ema, value in zip(self.ema.values(), net.state_dict().values()):
            if value.dtype.is_floating_point:
                ema.lerp_(value, 1 - decay)
                value.copy_(ema)


# --- evaluation -------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Test accuracy with airbench's test-time augmentation level 2 (mirror, and 1-pixel translations)."""
    net.eval()

    def mirror(x: Tensor) -> Tensor:
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))

    correct = 0
    for x, y in zip(normalize(images).split(2000), labels.split(2000)):
        x = x.contiguous(memory_format=torch.channels_last)
        padded = F.pad(x, (1,) * 4, "reflect")
        shifted = [padded[:, :, 0:32, 0:32], padded[:, :, 2:34, 2:34]]
        logits = 0.5 * mirror(x) + 0.5 * torch.stack([mirror(s.contiguous(memory_format=torch.channels_last))
                                                       for s in shifted]).mean(0)
        correct += int((logits.argmax(1) == y).sum())
    net.train()
    return correct / len(labels)


# --- training ---------------------------------------------------------------------------------


def triangle(steps: int, start: float, end: float, peak: float) -> np.ndarray:
    return np.interp(np.arange(1 + steps), [0, int(peak * steps), steps], [start, 1, end])


def optimizer(net: nn.Module, batch_size: int) -> torch.optim.SGD:
    momentum = HYP["momentum"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))  # Nesterov's steady-state step size, per 1024 examples
    lr = HYP["lr"] / kilostep_scale
    wd = HYP["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * HYP["bias_scaler"]
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    groups = [{"params": norm_biases, "lr": lr_biases, "weight_decay": wd / lr_biases},
              {"params": others, "lr": lr, "weight_decay": wd / lr}]
    return torch.optim.SGD(groups, momentum=momentum, nesterov=True)


def train(data: dict[str, tuple[Tensor, Tensor]], seed: int, epochs: float, log: bool = True) -> dict[str, object]:
    """One run: per epoch its test accuracy (with TTA), the training seconds so far (airbench's
    clock) and the wall seconds so far (evaluations included); and the final figures."""
    torch.manual_seed(seed)
    batch_size = HYP["batch_size"]
    loader = TrainLoader(*data["train"], batch_size)
    total_steps = math.ceil(len(loader) * epochs)
    net = make_net()
    opt = optimizer(net, batch_size)
    schedule = triangle(total_steps, start=0.2, end=0.07, peak=0.23)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: schedule[i])
    alpha = 0.95**5 * (torch.arange(total_steps + 1) / total_steps) ** 3
    loss_fn = nn.CrossEntropyLoss(label_smoothing=HYP["label_smoothing"], reduction="none")
    start = began = time.perf_counter()
    # airbench takes the first 5,000 of CIFAR's binary batches, which are in no class order; the
    # JPEG folders are sorted by class, so a random 5,000 stands in for them
    init_whitening_conv(net[0], normalize(data["train"][0][torch.randperm(len(data["train"][0]))[:5000]]))
    lookahead, seconds, steps, history = Lookahead(net), time.perf_counter() - start, 0, []
    for epoch in range(math.ceil(epochs)):
        net[0].bias.requires_grad = epoch < HYP["whiten_bias_epochs"]
        start = time.perf_counter()
        for inputs, labels in loader:
            loss = loss_fn(net(inputs), labels).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            if steps % 5 == 0:
                lookahead.update(net, decay=float(alpha[steps]))
            if steps >= total_steps:
                lookahead.update(net, decay=1.0)
                break
        seconds += time.perf_counter() - start
        accuracy = evaluate(net, *data["test"])
        history.append({"epoch": epoch + 1, "seconds": seconds, "wall": time.perf_counter() - began,
                        "test_acc": accuracy})
        if log:
            print(f"epoch {epoch + 1}: test {history[-1]['test_acc']:.2%} (TTA) after {seconds:.0f} s of training",
                  flush=True)
    return {"history": history, "test_acc": history[-1]["test_acc"], "seconds": seconds,
            "images_per_s": steps * batch_size / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=HYP["epochs"], help="default 9.9, as published")
    p.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="CIFAR-10 as ROOT/{train,test}/<class>/*.jpg")
    p.add_argument("--cache", type=Path, default=Path(os.path.expanduser("~/.cache/airbench94_port")))
    p.add_argument("--json", type=Path, help="also write the result as JSON")
    args = p.parse_args()
    if not (args.data_root / "train").is_dir():
        raise SystemExit(f"no CIFAR-10 at {args.data_root} (--data-root)")
    data = {s: load_split(args.data_root, s, args.cache) for s in ("train", "test")}
    result = train(data, args.seed, args.epochs)
    print(f"final: {result['test_acc']:.2%} after {result['seconds']:.0f} s, {result['images_per_s']:.0f} images/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
