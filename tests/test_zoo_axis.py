"""inception_v3 (per-axis kernels), shufflenet_v2 (channel split and shuffle) and squeezenet (the conv
head), exact to torchvision.

Counts are torchvision's weight metadata (`num_params`, `_ops` in GMACs rounded to 3 decimals),
except inception_v3's parameters: its weights hold the auxiliary head (27,161,264), the spec is
inception_v3(aux_logits=False), 23,834,568. Parity: random torchvision weights and BatchNorm
statistics ported by order, outputs compared in eval mode on a small input.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from conftest import SPECS

from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.model.build import build_model
from builder.model.port import port_weights, randomize_norm_statistics

INCEPTION_V3 = {"aux_logits": False, "init_weights": False}
AUX_LOGITS_PARAMS = 27_161_264 - 23_834_568  # InceptionAux: conv0, conv1 and its fc, in the weights only


def _published(tv_name: str) -> tuple[int, float]:
    from torchvision.models import get_model_weights

    meta = get_model_weights(tv_name).DEFAULT.meta
    return meta["num_params"], meta["_ops"]


@pytest.mark.parametrize("name", ["inception_v3", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5",
                                  "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1"])
def test_static_counts_are_torchvisions(name: str) -> None:
    spec = load_spec(SPECS / f"{name}.yaml")
    report = infer(spec)
    params, gmacs = _published(name)
    assert spec.name == name
    assert report.total_params == params - (AUX_LOGITS_PARAMS if name == "inception_v3" else 0)
    assert round(report.mult_adds / 1e9, 3) == gmacs


def _port_difference(name: str, kwargs: Mapping[str, object], size: int) -> float:
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    randomize_norm_statistics(reference)
    model = build_model(load_spec(SPECS / f"{name}.yaml")).eval()
    port_weights(model, reference.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        return (model(x) - reference(x)).abs().max().item()


@pytest.mark.parametrize(("name", "kwargs", "size"), [
    pytest.param("inception_v3", INCEPTION_V3, 75, marks=pytest.mark.slow),  # its smallest input; about 10 s
    ("shufflenet_v2_x1_0", {}, 64),
    ("squeezenet1_0", {}, 64),
    ("squeezenet1_1", {}, 64),
])
def test_ports_from_torchvision_with_equal_outputs(name: str, kwargs: Mapping[str, object], size: int) -> None:
    assert _port_difference(name, kwargs, size) <= 1e-5
