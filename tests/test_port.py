"""Porting torchvision's alexnet weights into the built alexnet_torchvision model."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from conftest import SPECS
from safetensors.torch import load_file
from torchvision.models import alexnet

from builder.lang.errors import BuilderError
from builder.lang.loading import load_spec
from builder.model.build import build_model
from builder.model.port import PortError, port_weights, randomize_norm_statistics, read_state_dict


def test_ported_weights_give_identical_outputs() -> None:
    torch.manual_seed(0)
    reference = alexnet(weights=None).eval()
    model = build_model(load_spec(SPECS / "alexnet_torchvision.yaml")).eval()
    pairs = port_weights(model, reference.state_dict())
    assert pairs[0] == ("features.0.weight", "features.block1.conv.weight")
    assert pairs[-1] == ("classifier.6.bias", "classifier.fc3.bias")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_mismatch_is_reported_and_nothing_is_copied() -> None:
    model = build_model(load_spec(SPECS / "alexnet.yaml"))
    before = model.features.block1.conv.weight.clone()
    with pytest.raises(PortError) as info:
        port_weights(model, alexnet(weights=None).state_dict())
    assert "features.0.weight (64, 3, 11, 11) -> features.block1.conv.weight (96, 3, 11, 11)" in str(info.value)
    assert torch.equal(model.features.block1.conv.weight, before)


def test_cli_ports_a_pth_file(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    reference = alexnet(weights=None, num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "model.safetensors"
    code, stdout, _ = cli("port-weights", SPECS / "alexnet_torchvision.yaml", tmp_path / "tv.pth",
                          "--set", "num_classes=10", "-o", out)
    assert code == 0 and "copied 16 tensors" in stdout
    assert torch.equal(load_file(str(out))["classifier.fc3.weight"], reference.classifier[6].weight)
    assert "only names and shapes were checked" in stdout


def test_many_mismatches_are_listed_briefly() -> None:
    with pytest.raises(PortError) as info:
        port_weights(build_model(load_spec(SPECS / "lenet5.yaml")), alexnet(weights=None).state_dict())
    message = str(info.value)
    assert message.count(" -> ") == 3
    assert re.search(r"; and \d+ more mismatched pairs; the source has 16 tensors, the model \d+$", message)


SMALL = ("--set", "input.height=64", "--set", "input.width=64")  # resnet18 ends in an adaptive pool


def test_torchvision_port_compares_outputs(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "model.safetensors"
    code, stdout, err = cli("port-weights", "resnet18", tmp_path / "tv.pth", "--torchvision", "resnet18", *SMALL,
                            "-o", out)
    assert code == 0, err
    assert "max abs output difference from torchvision's resnet18 0.00e+00" in stdout
    assert torch.equal(load_file(str(out))["features.stem.conv.weight"], reference.conv1.weight)


def test_torchvision_port_refuses_a_different_model(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    stand_in = tmp_path / "resnet18_avg.yaml"  # same tensors in the same order; the stem pools by average
    text = (SPECS / "resnet18.yaml").read_text()
    stand_in.write_text(text.replace("pool: {kind: max,", "pool: {kind: avg,", 1))
    assert stand_in.read_text() != text
    out = tmp_path / "model.safetensors"
    code, stdout, err = cli("port-weights", stand_in, "--torchvision", "resnet18", *SMALL, "-o", out)
    assert code == 1 and stdout == "" and not out.exists()
    assert err.startswith(f"error: {stand_in} is not torchvision's resnet18: max abs output difference")
    assert "exceeds 1e-05; nothing written" in err


def test_unknown_torchvision_name(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, err = cli("port-weights", "resnet18", "--torchvision", "resnet81", "-o", tmp_path / "o.safetensors")
    assert code == 2
    assert err == "error: --torchvision resnet81: not a torchvision classifier; did you mean 'resnet18'?\n"


def test_port_weights_needs_a_source(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, err = cli("port-weights", "resnet18", "-o", tmp_path / "o.safetensors")
    assert code == 2 and "give a WEIGHTS file, --torchvision NAME, or both" in err


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Path("/etc/passwd")}, path)
    with pytest.raises(BuilderError, match="cannot load weights safely"):
        read_state_dict(path)


def test_missing_weights_file(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, err = cli("port-weights", SPECS / "alexnet_torchvision.yaml", tmp_path / "nope.pth", "-o",
                       tmp_path / "o.safetensors")
    assert code == 2 and err == f"error: {tmp_path / 'nope.pth'}: no such weights file\n"


# Every canon spec that torchvision has, with the keyword arguments that make the two the same model.
TORCHVISION = {
    "alexnet_torchvision": ("alexnet", {}),
    "vgg11": ("vgg11", {}),
    "vgg11_bn": ("vgg11_bn", {}),
    "vgg16": ("vgg16", {}),
    "resnet18": ("resnet18", {}),
    "resnet34": ("resnet34", {}),
    "resnet50": ("resnet50", {}),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": True}),
    "densenet121": ("densenet121", {}),
    "mobilenet_v2": ("mobilenet_v2", {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_every_canon_model_ports_from_torchvision_with_equal_outputs(name: str) -> None:
    assert port_difference(name, *TORCHVISION[name]) <= 1e-5


def port_difference(spec_name: str, tv_name: str, kwargs: Mapping[str, object]) -> float:
    """Max abs output difference of the built spec holding a random torchvision model's ported weights."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model(tv_name, weights=None, **kwargs).eval()
    randomize_norm_statistics(reference)  # so a swapped mean and variance would show
    model = build_model(load_spec(SPECS / f"{spec_name}.yaml")).eval()
    port_weights(model, reference.state_dict())
    x = torch.randn(2, 3, 64, 64)  # every canon model ends in an adaptive pool: a small input is enough
    with torch.no_grad():
        return (model(x) - reference(x)).abs().max().item()


@pytest.mark.parametrize("name", TORCHVISION)
def test_static_counts_equal_torchvisions_published_figures(name: str) -> None:
    """Parameters and GMACs (torchvision's `_ops`, rounded to 3 decimals) from the weights' metadata."""
    assert static_counts(name) == published_counts(TORCHVISION[name][0])


def static_counts(spec_name: str) -> tuple[int, float]:
    """A shipped spec's parameters and G mult-adds (rounded as torchvision publishes them), built nothing."""
    from builder.lang.shapes import infer

    report = infer(load_spec(SPECS / f"{spec_name}.yaml"))
    return report.total_params, round(report.mult_adds / 1e9, 3)


def published_counts(tv_name: str) -> tuple[int, float]:
    """torchvision's parameters and GMACs (`_ops`) for a model, from its default weights' metadata."""
    from torchvision.models import get_model_weights

    meta = get_model_weights(tv_name).DEFAULT.meta
    return meta["num_params"], meta["_ops"]
