"""The modern kinds (gate, layernorm/groupnorm, stochastic depth, layer scale): torchvision's
modules exactly, and one located line with exit 2 for each bad use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SPECS
from torchvision.models.convnext import LayerNorm2d
from torchvision.ops import SqueezeExcitation, stochastic_depth

from builder.lang.kinds.residual import apply_stochastic_depth, linear_rates
from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.lang.spec import Spec, apply_width
from builder.model.build import build_model
from builder.model.port import PortError, port_weights

Cli = Callable[..., tuple[int, str, str]]


def _spec(blocks: list[dict[str, Any]], channels: int = 8, width: float = 1.0) -> Spec:
    return Spec.model_validate({
        "name": "k", "input": {"channels": channels, "height": 6, "width": 6}, "num_classes": 3, "width": width,
        "blocks": blocks, "classifier": {"hidden": [], "adaptive_pool": [1, 1]},
    })


def _same_output(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor) -> float:
    port_weights(ours, theirs.state_dict())
    with torch.no_grad():
        return float((ours.eval()(x) - theirs.eval()(x)).abs().max())


@pytest.mark.parametrize(("act", "gate", "torch_act", "torch_gate"), [
    ("relu", "hardsigmoid", torch.nn.ReLU, torch.nn.Hardsigmoid),
    ("silu", "sigmoid", torch.nn.SiLU, torch.nn.Sigmoid),
])
def test_a_gate_is_torchvisions_squeeze_excitation(act: str, gate: str, torch_act: Any, torch_gate: Any) -> None:
    spec = _spec([{"kind": "gate", "squeeze_channels": 3, "activation": act, "gate": gate}])
    ours = build_model(spec).features.block1
    theirs = SqueezeExcitation(8, 3, torch_act, torch_gate)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert _same_output(ours, theirs, torch.randn(2, 8, 5, 7)) == 0.0
    assert infer(spec).blocks[0].params == sum(p.numel() for p in theirs.parameters())


def test_width_scales_a_gates_channels() -> None:
    gate = {"kind": "gate", "squeeze_channels": 8, "channels": 16}
    wide = apply_width(_spec([{"out_channels": 16, "kernel_size": 1}, gate], width=0.5))
    assert (wide.blocks[1].squeeze_channels, wide.blocks[1].channels) == (4, 8)
    assert not infer(wide).problems


@pytest.mark.parametrize("name", ["hardswish", "hardsigmoid"])
def test_hard_activations_build_everywhere(name: str) -> None:
    spec = _spec([{"out_channels": 4, "kernel_size": 1, "activation": name}, {"kind": "activation", "fn": name}])
    model = build_model(spec)
    expected = {"hardswish": torch.nn.Hardswish, "hardsigmoid": torch.nn.Hardsigmoid}[name]
    assert isinstance(model.features.block1.act, expected) and isinstance(model.features.block2, expected)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("norm", "theirs"), [
    ({"kind": "layernorm", "eps": 1e-6}, LayerNorm2d(8, eps=1e-6)),
    ({"kind": "groupnorm", "groups": 4, "eps": 1e-3}, torch.nn.GroupNorm(4, 8, eps=1e-3)),
])
def test_layernorm_and_groupnorm_are_torchs_as_a_norm_and_standalone(norm: dict[str, Any],
                                                                      theirs: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_()
    spec = _spec([{"name": "conv", "out_channels": 8, "kernel_size": 1, "norm": norm, "activation": "none"},
                  {**norm, "name": "alone"}])
    model = build_model(spec)
    x = torch.randn(2, 8, 5, 7)
    assert _same_output(model.features.alone, theirs, x) < 1e-6
    assert _same_output(model.features.conv.norm, theirs, x) < 1e-6
    assert [s.params for s in infer(spec).blocks] == [_params(model.features.conv), _params(model.features.alone)]
    assert infer(spec).blocks[0].layers[1] == ("layernorm" if norm["kind"] == "layernorm" else "groupnorm 4")


def test_width_keeps_channels_a_multiple_of_groupnorm_groups() -> None:
    blocks = [{"out_channels": 48, "kernel_size": 1, "norm": {"kind": "groupnorm", "groups": 16}},
              {"out_channels": 40, "kernel_size": 1}, {"kind": "groupnorm", "groups": 16}]
    wide = apply_width(_spec(blocks, width=0.5))
    assert [b.out_channels for b in wide.blocks[:2]] == [32, 16]  # 24 and 20, rounded to multiples of 16
    assert not infer(wide).problems


def _residual(**fields: Any) -> dict[str, Any]:
    return {"kind": "residual", "body": [{"out_channels": 8, "kernel_size": 1, "activation": "none"}], **fields}


def test_stochastic_depth_drops_rows_of_the_body_while_training_only() -> None:
    block = build_model(_spec([_residual(stochastic_depth=0.5)])).features.block1
    x = torch.randn(64, 8, 3, 3)
    with torch.no_grad():
        body = block.body(x)
        torch.manual_seed(0)
        trained = block.train()(x)
        torch.manual_seed(0)
        assert torch.equal(trained, stochastic_depth(body, 0.5, "row", training=True) + x)
        assert torch.equal(block.eval()(x), body + x)
    kept = (trained - x).flatten(1).abs().sum(1) > 0
    assert 0 < int(kept.sum()) < 64  # some samples dropped, some kept


@pytest.mark.parametrize(("divide_by", "expected"), [
    ("blocks", [0.2 * i / 4 for i in range(4)]),  # torchvision's EfficientNet
    ("blocks_minus_one", [0.2 * i / 3 for i in range(4)]),  # ConvNeXt: the last block gets the rate
])
def test_a_linear_schedule_counts_the_residuals_that_take_part(divide_by: str, expected: list[float]) -> None:
    inner = _residual(stochastic_depth="linear")
    blocks = [_residual(stochastic_depth="linear", name="a"), _residual(name="fixed"),
              {"kind": "sequence", "name": "s", "blocks": [inner, inner]}, _residual(stochastic_depth="linear")]
    spec = Spec.model_validate({**_spec(blocks).model_dump(exclude_none=True),
                                "stochastic_depth": {"rate": 0.2, "divide_by": divide_by}})
    assert linear_rates(spec) == dict(zip(["a", "s.block1", "s.block2", "block4"], expected, strict=True))
    resolved = apply_stochastic_depth(spec)
    assert [resolved.blocks[0].stochastic_depth, *(b.stochastic_depth for b in resolved.blocks[2].blocks)] == \
        expected[:3]
    for built in (build_model(spec), build_model(resolved)):  # unresolved: the builder resolves it too
        drops = [built.features.a, built.features.s.block1, built.features.s.block2, built.features.block4]
        assert [d.stochastic_depth.p if d.stochastic_depth else 0.0 for d in drops] == expected
        assert built.features.fixed.stochastic_depth is None


def test_layer_scale_is_a_learnable_factor_per_channel_stored_first() -> None:
    spec = _spec([_residual(layer_scale=1e-6, stochastic_depth=0.2)])
    block = build_model(spec).features.block1
    assert list(block.state_dict())[:2] == ["layer_scale", "body.block1.conv.weight"]  # as CNBlock's
    assert block.layer_scale.shape == (8, 1, 1) and torch.equal(block.layer_scale, torch.ones(8, 1, 1) * 1e-6)
    assert infer(spec).blocks[0].params == _params(block) == 8 + 8 * 8 + 8
    assert "layer scale 1e-06" in infer(spec).blocks[0].layers
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        block.layer_scale.normal_()
        assert torch.allclose(block.eval()(x), block.layer_scale * block.body(x) + x)


def test_resolve_writes_the_schedule_out(write_spec: Callable[..., Path]) -> None:
    path = write_spec(HEAD.replace("blocks:", "stochastic_depth: {rate: 0.3, divide_by: blocks_minus_one}\nblocks:")
                      + "  - {kind: residual, stochastic_depth: linear, body: [{out_channels: 8, kernel_size: 1}]}\n"
                      + "  - {kind: residual, stochastic_depth: linear, body: [{out_channels: 8, kernel_size: 1}]}\n")
    assert [b.stochastic_depth for b in load_spec(path).blocks] == [0.0, 0.3]


HEAD = """\
name: bad
input: {channels: 8, height: 8, width: 8}
num_classes: 3
classifier: {hidden: [], adaptive_pool: [1, 1]}
blocks:
"""


@pytest.mark.parametrize(("block", "message"), [
    ("{kind: gate, squeeze_channels: 2, channels: 16}",
     "7:49: error: blocks[1].channels: block2: the gate expects 16 input channels, its input has 4"),
    ("{kind: gate, squeeze_channels: 2, gate: relu}",
     "7:45: error: blocks[1].gate: must be one of sigmoid, hardsigmoid; got 'relu'"),
    ("{kind: groupnorm, groups: 3}", "7:31: error: blocks[1].groups: block2: groupnorm groups (3) must divide "
     "the channels (4)"),
    ("{out_channels: 6, kernel_size: 1, norm: {kind: groupnorm, groups: 4}}",
     "7:71: error: blocks[1].norm.groups: block2: groupnorm groups (4) must divide the channels (6)"),
    ("{kind: residual, stochastic_depth: 1.0, body: [{out_channels: 4, kernel_size: 1}]}",
     "7:40: error: blocks[1].stochastic_depth: must be < 1.0, got 1.0"),
    ("{kind: residual, layer_scale: 0, body: [{out_channels: 4, kernel_size: 1}]}",
     "7:35: error: blocks[1].layer_scale: must be > 0.0, got 0"),
    ("{kind: residual, stochastic_depth: -0.1, body: [{out_channels: 4, kernel_size: 1}]}",
     "7:40: error: blocks[1].stochastic_depth: must be >= 0.0, got -0.1"),
    ("{kind: residual, stochastic_depth: linaer, body: [{out_channels: 4, kernel_size: 1}]}",
     "7:40: error: blocks[1].stochastic_depth: must be one of linear; got 'linaer'; did you mean 'linear'?"),
    ("{kind: residual, stochastic_depth: linear, body: [{out_channels: 4, kernel_size: 1}]}",
     "7:40: error: blocks[1].stochastic_depth: block2: stochastic_depth: linear needs the spec's schedule "
     "(top-level `stochastic_depth: {rate: ..., divide_by: ...}`)"),
])
def test_a_bad_block_is_one_located_line(block: str, message: str, cli: Cli,
                                         write_spec: Callable[..., Path]) -> None:
    path = write_spec(HEAD + "  - {out_channels: 4, kernel_size: 1}\n  - " + block + "\n")
    code, _, err = cli("validate", path)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"{path}:{message}"]


def test_a_linear_weight_ports_into_a_1x1_conv_and_nothing_else_reshapes() -> None:
    model = build_model(_spec([{"out_channels": 5, "kernel_size": 1}]))
    linear = torch.nn.Linear(8, 5)
    head = model.classifier.state_dict()
    source = {"fc.weight": linear.weight, "fc.bias": linear.bias, **{f"h.{k}": v for k, v in head.items()}}
    port_weights(model, source)
    assert torch.equal(model.features.block1.conv.weight.flatten(1), linear.weight)
    with pytest.raises(PortError, match=r"fc.weight \(40,\) -> features.block1.conv.weight \(5, 8, 1, 1\)"):
        port_weights(model, {**source, "fc.weight": linear.weight.flatten()})


def test_convnext_tiny_is_torchvisions_with_its_stochastic_depth_and_layer_scale() -> None:
    """Counts, each block's stochastic depth rate and layer scale, and outputs after the port."""
    import torchvision

    from builder.model.blocks import Residual

    torch.manual_seed(0)
    theirs = torchvision.models.convnext_tiny(weights=None).eval()
    ours = build_model(load_spec(SPECS / "convnext_tiny.yaml")).eval()
    assert _params(ours) == _params(theirs) == 28_589_128
    tv_blocks = [m for m in theirs.modules() if type(m).__name__ == "CNBlock"]
    our_blocks = [m for m in ours.modules() if isinstance(m, Residual)]
    assert [b.stochastic_depth.p for b in tv_blocks] == [b.stochastic_depth.p if b.stochastic_depth else 0.0
                                                          for b in our_blocks]
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.LayerNorm):  # so a swapped weight and bias would show
                module.weight.normal_(1, 0.5)
                module.bias.normal_(0, 0.5)
        for block in tv_blocks:
            block.layer_scale.normal_()  # at 1e-6 the blocks would hardly count
    port_weights(ours, theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


SHIPPED = ["mobilenet_v3_large", "mobilenet_v3_small", "convnext_tiny", "convnext_small", "convnext_base",
           "convnext_large"]


@pytest.mark.parametrize("name", SHIPPED)
def test_the_new_specs_have_torchvisions_published_counts(name: str) -> None:
    """Parameters and GMACs (`_ops`) as torchvision's weight metadata gives them; nothing built."""
    from torchvision.models import get_model_weights

    meta = get_model_weights(name).DEFAULT.meta
    report = infer(load_spec(SPECS / f"{name}.yaml"))
    assert (report.total_params, round(report.mult_adds / 1e9, 3)) == (meta["num_params"], meta["_ops"])


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_mobilenet_v3_ports_from_torchvision_with_equal_outputs(name: str) -> None:
    import torchvision

    torch.manual_seed(0)
    theirs = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # so a swapped mean and variance would show
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    ours = build_model(load_spec(SPECS / f"{name}.yaml")).eval()
    port_weights(ours, theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b1", "efficientnet_v2_s", "convnext_tiny"])
def test_stochastic_depth_rates_are_torchvisions_block_by_block(name: str) -> None:
    """Each residual that adds its input drops its body at torchvision's rate for that block
    (EfficientNet: 0.2 * i / N over all N blocks; ConvNeXt: 0.1 * i / (N - 1))."""
    import torchvision

    from builder.model.blocks import Residual

    theirs = torchvision.models.get_model(name, weights=None)
    expected = [b.stochastic_depth.p for b in theirs.modules()
                if type(b).__name__ in ("MBConv", "FusedMBConv", "CNBlock") and getattr(b, "use_res_connect", True)]
    ours = build_model(load_spec(SPECS / f"{name}.yaml", ["input.height=64", "input.width=64"]))
    rates = [r.stochastic_depth.p if r.stochastic_depth is not None else 0.0
             for r in ours.modules() if isinstance(r, Residual) and r.shortcut is not None]
    assert rates == pytest.approx(expected, abs=1e-12) and max(rates) > 0


def test_a_pointwise_conv_computes_the_same_on_either_memory_layout() -> None:
    """A 1x1 conv runs as nn.Linear on a channels-last view (ConvNeXt's MLP after LayerNorm2d):
    the same values and gradients as nn.Conv2d with the same weights."""
    from builder.model.blocks import LayerNorm2d, Pointwise

    torch.manual_seed(0)
    ours, plain = Pointwise(16, 24, 1), torch.nn.Conv2d(16, 24, 1)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(3, 16, 5, 7)
    for view in (x, LayerNorm2d(16)(x), x.to(memory_format=torch.channels_last)):
        a, b = view.detach().requires_grad_(), view.detach().requires_grad_()
        out_a, out_b = ours(a), plain(b)
        assert torch.allclose(out_a, out_b, atol=1e-5)
        out_a.square().sum().backward()
        out_b.square().sum().backward()
        assert a.grad is not None and b.grad is not None and torch.allclose(a.grad, b.grad, atol=1e-4)
    assert not LayerNorm2d(16)(x).is_contiguous()  # the case the linear path is for


def test_gelu_on_a_channels_last_view_is_nn_gelu() -> None:
    """GELU takes a channels-last view through its own layout (faster): the same values and
    gradients as nn.GELU (to rounding: torch's vectorized erf differs from its strided loop in the
    last bits), and the output keeps the input's layout."""
    from builder.model.blocks import GELU, channels_last_view

    x = torch.randn(3, 5, 7, 16).permute(0, 3, 1, 2)  # (N, C, H, W) over (N, H, W, C) memory
    assert channels_last_view(x) and not channels_last_view(x.contiguous())
    for view in (x, x.contiguous()):
        a, b = view.detach().requires_grad_(), view.detach().requires_grad_()
        out_a, out_b = GELU()(a), torch.nn.GELU()(b)
        assert torch.allclose(out_a, out_b, rtol=1e-6, atol=1e-6) and out_a.stride() == out_b.stride()
        out_a.square().sum().backward()
        out_b.square().sum().backward()
        assert a.grad is not None and b.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-6)
