"""unet.yaml is the reference U-Net exactly: its count, its weights ported from a hand-written module
of that structure give the same outputs, its static shapes are the real ones, and an input size
that does not fit is refused before anything is built, naming the sizes that do."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import SPECS
from torch import nn

from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.model.build import build_model
from builder.model.port import port_weights
from builder.model.summary import summarize
from builder.tools.draw import draw

Cli = Callable[..., tuple[int, str, str]]


class DoubleConv(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ReferenceUNet(nn.Module):
    """The reference U-Net, written as its repository writes it (ups registered before downs)."""

    def __init__(self, c_in: int = 3, c_out: int = 1, features: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        for f in features:
            self.downs.append(DoubleConv(c_in, f))
            c_in = f
        for f in reversed(features):
            self.ups.append(nn.ConvTranspose2d(f * 2, f, kernel_size=2, stride=2))
            self.ups.append(DoubleConv(f * 2, f))
        self.bottleneck = nn.Conv2d(features[-1], features[-1] * 2, 3, 1, 1)
        self.final_conv = nn.Conv2d(features[0], c_out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i in range(0, len(self.ups), 2):
            x = self.ups[i](x)
            skip = skips[-1 - i // 2]
            if x.shape != skip.shape:
                x = TF.resize(x, size=list(skip.shape[2:]))
            x = self.ups[i + 1](torch.cat((skip, x), dim=1))
        return self.final_conv(x)


def _forward_order(state: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """The reference's tensors in forward order (downs, bottleneck, ups, final conv), the spec's order."""
    groups = ("downs.", "bottleneck.", "ups.", "final_conv.")
    rank = {key: next(i for i, g in enumerate(groups) if key.startswith(g)) for key in state}
    return OrderedDict(sorted(state.items(), key=lambda kv: rank[kv[0]]))  # stable: order within a group kept


@pytest.fixture(scope="module")
def ported() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    reference = ReferenceUNet().eval()
    for module in reference.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(module.weight, 0.5, 1.5)
    model = build_model(load_spec(SPECS / "unet.yaml")).eval()
    port_weights(model, _forward_order(reference.state_dict()))
    return reference, model


def test_unet_has_the_reference_count() -> None:
    spec = load_spec(SPECS / "unet.yaml")
    assert infer(spec).total_params == 21_597_377 == sum(p.numel() for p in ReferenceUNet().parameters())


@pytest.mark.parametrize("size", [(160, 160), (35, 35), (41, 29)])
def test_ported_unet_gives_the_references_outputs(ported: tuple[nn.Module, nn.Module], size: tuple[int, int]) -> None:
    """160x160, and odd sizes where the upsampled map is resized to the skip's size (17 -> 16 -> 17)."""
    reference, model = ported
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        want, got = reference(x), model(x)
    assert got.shape == want.shape == (1, 1, *size)
    assert (got - want).abs().max().item() <= 1e-5


def test_unet_static_shapes_are_the_real_ones(ported: tuple[nn.Module, nn.Module]) -> None:
    _, model = ported
    report = infer(load_spec(SPECS / "unet.yaml", ["input.height=48", "input.width=48"]))
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [model.get_submodule(f"features.{s.name}").register_forward_hook(
        lambda m, i, o, n=s.name: seen.__setitem__(n, tuple(o.shape[1:]))) for s in report.all_blocks]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 48, 48))
    for hook in hooks:
        hook.remove()
    assert seen == {s.name: s.out_shape for s in report.all_blocks}
    assert report.head is not None and report.head.out == tuple(out.shape[1:]) == (1, 48, 48)
    assert seen["level1.skip.body.level2.skip.body.level3.skip.body.level4.skip.body.bottleneck"] == (1024, 3, 3)


def test_unet_small_summarizes_and_draws_its_per_pixel_output(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "unet_small.yaml")
    summary = summarize(spec, device="cpu")
    assert summary.ok, summary.mismatches
    assert summary.layers[-1].path == "head" and summary.layers[-1].output == (4, 64, 64)
    svg = draw(spec, tmp_path / "unet_small.svg").read_text()
    assert "4 x 64 x 64: 4 classes per pixel" in svg and "concat, exact" not in svg and "conv_transpose" in svg


def test_a_size_that_does_not_fit_is_one_line_naming_the_sizes_that_do(cli: Cli) -> None:
    path = SPECS / "unet_small.yaml"
    code, out, err = cli("validate", str(path), "--set", "input.height=70", "--set", "input.width=70")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert ("level1.skip.body.level2.skip.body.level3.skip: concat of 64x17x17 (the skip) and 64x16x16 (its body) "
            "at input 70x70; the nearest valid input sizes are 64 and 80") in err
    code, out, err = cli("validate", str(SPECS / "unet.yaml"), "--set", "templates.skip.block.match=exact",
                         "--set", "input.height=161", "--set", "input.width=161")
    assert code == 2 and "concat of 64x161x161 (the skip) and 64x160x160 (its body)" in err
    assert "the nearest valid input sizes are 160 and 176" in err
    code, out, _ = cli("validate", str(path), "--set", "input.height=80", "--set", "input.width=48")
    assert code == 0 and "per-pixel 4x80x48" in out

