"""The torchvision canon in arch_specs/: every spec named after a torchvision model is that model.

Static counts are checked for every such spec without building anything; port parity (random
torchvision weights and BatchNorm statistics, outputs compared in eval mode) for one model of each
family added here. benchmarks/port_all.py runs the parity check for every shipped model.
"""

from __future__ import annotations

import pytest
import torch
from conftest import SPECS
from test_port import TORCHVISION, port_difference, published_counts, static_counts

from builder.lang.loading import load_spec


def _torchvision_names() -> set[str]:
    import torchvision

    return set(torchvision.models.list_models(module=torchvision.models))


# Specs named after a torchvision model; `alexnet.yaml` is the article's AlexNet (torchvision's is
# `alexnet_torchvision.yaml`), `googlenet.yaml` torchvision's without its auxiliary heads.
AS_TORCHVISION = {"alexnet_torchvision": "alexnet"}
NOT_TORCHVISION = {"alexnet"}
NAMED = sorted(
    (p.stem, AS_TORCHVISION.get(p.stem, p.stem)) for p in SPECS.glob("*.yaml")
    if AS_TORCHVISION.get(p.stem, p.stem) in _torchvision_names() and p.stem not in NOT_TORCHVISION
)


def test_the_new_families_ship_under_torchvisions_names() -> None:
    shipped = {spec for spec, _ in NAMED}
    assert {"vgg13", "vgg13_bn", "vgg16_bn", "vgg19", "vgg19_bn", "resnet101", "resnet152", "resnext50_32x4d",
            "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2", "densenet161",
            "densenet169", "densenet201", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
            "regnet_x_400mf", "regnet_x_800mf", "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf",
            "regnet_x_16gf", "regnet_x_32gf", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf",
            "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf",
            *(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s", "efficientnet_v2_m",
            "efficientnet_v2_l"} <= shipped


@pytest.mark.parametrize(("spec", "tv_name"), NAMED, ids=[spec for spec, _ in NAMED])
def test_static_counts_are_torchvisions(spec: str, tv_name: str) -> None:
    """Parameters and GMACs equal torchvision's weight metadata; nothing is built."""
    assert static_counts(spec) == expected_counts(tv_name)


def expected_counts(tv_name: str) -> tuple[int, float]:
    """The published counts; inception_v3's metadata includes its auxiliary head, which the spec
    (torchvision's aux_logits=False) leaves out, so that head's parameters (counted on meta) are taken off."""
    params, gmacs = published_counts(tv_name)
    if tv_name == "inception_v3":
        import torchvision

        with torch.device("meta"):
            aux = torchvision.models.inception_v3(aux_logits=True, init_weights=False).AuxLogits
        params -= sum(p.numel() for p in aux.parameters())
    return params, gmacs


@pytest.mark.parametrize(("spec", "tv_name"), NAMED, ids=[spec for spec, _ in NAMED])
def test_spec_names_itself(spec: str, tv_name: str) -> None:
    """The `name:` inside is the file's, so run directories and tables say the right model."""
    assert load_spec(SPECS / f"{spec}.yaml").name == spec


# One model of each family added here (the vgg variants only combine what vgg11_bn and vgg16 in
# test_port have); the rest of each family differs only in numbers.
PORTED = ["resnext50_32x4d", "wide_resnet50_2", "mnasnet0_5", "regnet_x_400mf", "densenet161", "regnet_y_400mf",
          "efficientnet_b0", "efficientnet_v2_s"]


@pytest.mark.parametrize("name", PORTED)
def test_new_families_port_from_torchvision_with_equal_outputs(name: str) -> None:
    assert name not in TORCHVISION  # test_port covers those
    assert port_difference(name, name, {}) <= 1e-5
