"""torchvision's segmentation models as specs: fcn_resnet50 and deeplabv3_resnet50 (aux_loss=False)
and lraspp_mobilenet_v3_large have torchvision's parameter counts, their static shapes are the
built modules', and torchvision's weights ported by order and shape give torchvision's outputs,
the final resize to any input size included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import SPECS
from torch import nn

from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.model.build import build_model
from builder.model.port import port_weights

MODELS = {"fcn_resnet50": 32_957_013, "deeplabv3_resnet50": 39_638_869, "lraspp_mobilenet_v3_large": 3_221_538}


@pytest.mark.parametrize("name", MODELS)
def test_segmentation_specs_have_torchvisions_count(name: str) -> None:
    report = infer(load_spec(SPECS / f"{name}.yaml"))
    assert report.total_params == MODELS[name] and not report.problems
    assert report.head is not None and report.head.out == (21, 520, 520)
    assert report.blocks[-1].out_shape[1:] == (65, 65)  # output stride 8 (LR-ASPP's logits: at low's stride 8)


def test_lraspp_has_torchvisions_published_figures_and_follows_num_classes() -> None:
    """3,221,538 parameters and 2.086 G mult-adds (torchvision's `_ops`); the two classifier convs
    follow --set num_classes and no other block does; the high path is at output stride 16."""
    from torchvision.models.segmentation import LRASPP_MobileNet_V3_Large_Weights

    path = SPECS / "lraspp_mobilenet_v3_large.yaml"
    report = infer(load_spec(path))
    meta = LRASPP_MobileNet_V3_Large_Weights.DEFAULT.meta
    assert (report.total_params, round(report.mult_adds / 1e9, 3)) == (meta["num_params"], meta["_ops"])
    shapes = {s.name: s.out_shape for s in report.all_blocks}
    assert shapes["bneck4"] == (40, 65, 65) and shapes["high.body.head"] == (960, 33, 33)
    assert shapes["high.body.lraspp"] == (128, 33, 33) and shapes["high"] == (168, 65, 65)
    two = infer(load_spec(path, ["num_classes=2"]))
    assert two.head is not None and two.head.out == (2, 520, 520) and not two.problems
    assert two.total_params == MODELS["lraspp_mobilenet_v3_large"] - 19 * (40 + 1) - 19 * (128 + 1)
    changed = {s.name for s, t in zip(report.all_blocks, two.all_blocks, strict=True) if s.out_shape != t.out_shape}
    assert changed == {"classifier", "classifier.branch1.low_classifier", "classifier.branch2.high_classifier"}
    half = infer(load_spec(path, ["width=0.5"]))  # the split follows the scaled low and x; the classes stay
    assert not half.problems and half.head is not None and half.head.out == (21, 520, 520)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_ported_segmentation_models_give_torchvisions_outputs(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, aux_loss=False)
    assert sum(p.numel() for p in theirs.parameters()) == MODELS[name]
    for module in theirs.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    spec = load_spec(SPECS / f"{name}.yaml", ["input.height=64", "input.width=64"])
    ours = build_model(spec).eval()
    port_weights(ours, theirs.state_dict())
    theirs.eval()
    report = infer(spec)
    seen: dict[str, tuple[int, ...]] = {}
    for s in report.all_blocks:
        ours.get_submodule(f"features.{s.name}").register_forward_hook(
            lambda m, i, o, n=s.name: seen.__setitem__(n, tuple(o.shape[1:])))
    for size in [(64, 64), (57, 71)]:  # 57x71: features 8x9, resized back to 57x71
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            want, got = theirs(x)["out"], ours(x)
        assert got.shape == want.shape == (1, 21, *size)
        assert (got - want).abs().max().item() <= 1e-5
        if size == (64, 64):
            assert seen == {s.name: s.out_shape for s in report.all_blocks}


def test_port_weights_ports_torchvisions_lraspp(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    """torchvision's segmentation models by name (no pretrained backbone), compared on their "out"."""
    out = tmp_path / "lraspp.safetensors"
    code, stdout, err = cli("port-weights", "lraspp_mobilenet_v3_large", "--torchvision", "lraspp_mobilenet_v3_large",
                            "--set", "input.height=57", "--set", "input.width=71", "-o", out)
    assert code == 0 and out.is_file(), err
    assert "copied 272 tensors (backbone.0.0.weight -> features.stem.conv.weight" in stdout
    assert "max abs output difference from torchvision's lraspp_mobilenet_v3_large" in stdout
