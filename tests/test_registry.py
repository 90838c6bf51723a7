"""The registry of block kinds: every kind has every part, and each part agrees with the built module."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from builder.lang.diff import diff_specs
from builder.lang.norms import NORMS, NormSpec
from builder.lang.registry import (
    FAMILIES,
    KindDef,
    Label,
    RegistryError,
    child_lists,
    kinds,
    leaf_frame,
    register_kind,
    resolve_factory,
    walk_blocks,
)
from builder.lang.shapes import infer
from builder.lang.spec import Spec, apply_width
from builder.model.build import build_model
from builder.tools.draw import draw

CONV = {"out_channels": 4, "kernel_size": 3, "padding": 1}
# One small block of every registered kind: a kind added without an example here fails below.
EXAMPLES: dict[str, dict[str, Any]] = {
    "conv": {**CONV, "groups": 2, "norm": {"kind": "batchnorm"}, "pool": {"kind": "max", "kernel_size": 2}},
    "sequence": {"kind": "sequence", "blocks": [CONV, {"kind": "batchnorm"}]},
    "residual": {"kind": "residual", "body": [{**CONV, "out_channels": 6, "stride": 2}], "activation": "relu",
                 "layer_scale": 0.5, "stochastic_depth": 0.2},
    "parallel": {"kind": "parallel", "branches": [[CONV], [], [{"kind": "maxpool", "stride": 1, "padding": 1}]]},
    "maxpool": {"kind": "maxpool", "kernel_size": 2},
    "avgpool": {"kind": "avgpool", "kernel_size": 3, "stride": 1, "padding": 1},
    "adaptive_avgpool": {"kind": "adaptive_avgpool", "output_size": [2, 3]},
    "batchnorm": {"kind": "batchnorm"},
    "activation": {"kind": "activation", "fn": "gelu"},
    "dropout": {"kind": "dropout", "p": 0.2},
    "gate": {"kind": "gate", "squeeze_channels": 2, "activation": "hardswish", "gate": "hardsigmoid", "channels": 4},
    "layernorm": {"kind": "layernorm", "eps": 1e-6},
    "groupnorm": {"kind": "groupnorm", "groups": 2, "eps": 1e-3},
    "conv_transpose": {"kind": "conv_transpose", "out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1,
                       "output_padding": 1, "norm": {"kind": "batchnorm"}, "activation": "relu"},
    "upsample": {"kind": "upsample", "scale_factor": 1.5, "mode": "bilinear", "align_corners": True},
    "skip": {"kind": "skip", "match": "resize", "body": [
        {"kind": "maxpool", "kernel_size": 3},
        {"kind": "conv_transpose", "out_channels": 4, "kernel_size": 2, "stride": 2}]},
}
# Variants of a kind ("kind/variant"): a field whose arithmetic the kind's plain example does not reach.
EXAMPLES |= {
    "conv/axes": {**CONV, "kernel_size": [1, 3], "stride": [2, 1], "padding": [0, 2], "dilation": [1, 2],
                  "pool": {"kind": "max", "kernel_size": [2, 1], "stride": [1, 2], "dilation": [1, 2]}},
    "maxpool/axes": {"kind": "maxpool", "kernel_size": [3, 2], "stride": [1, 2], "padding": [1, 0], "dilation": 2,
                     "ceil_mode": True},
}
EXAMPLES |= {
    "parallel/split": {"kind": "parallel", "input": "split", "branches": [[], [{**CONV, "out_channels": 3}]]},
    "channel_shuffle": {"kind": "channel_shuffle", "groups": 2},
}


def _spec(block: dict[str, Any], width: float = 1.0) -> Spec:
    return Spec.model_validate({
        "name": "one", "input": {"channels": 4, "height": 8, "width": 8}, "num_classes": 3, "width": width,
        "blocks": [{**CONV, "name": "stem"}, block], "classifier": {"hidden": [], "adaptive_pool": [1, 1]},
    })


def test_every_registered_kind_has_an_example() -> None:
    assert {tag.partition("/")[0] for tag in EXAMPLES} == set(kinds())


@pytest.mark.parametrize("tag", sorted(EXAMPLES))
def test_a_kind_infers_what_it_builds(tag: str) -> None:
    """Names, output shapes and parameters of every block at every depth equal the built module's."""
    spec = _spec(EXAMPLES[tag])
    report = infer(spec)
    assert not report.problems and report.flatten is not None
    model = build_model(spec).eval()
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [model.get_submodule(f"features.{s.name}").register_forward_hook(
        lambda m, i, o, n=s.name: seen.__setitem__(n, tuple(o.shape[1:]))) for s in report.all_blocks]
    model(torch.zeros(2, 4, 8, 8))
    for hook in hooks:
        hook.remove()
    assert seen == {s.name: s.out_shape for s in report.all_blocks}
    for s in report.all_blocks:
        assert sum(p.numel() for p in model.get_submodule(f"features.{s.name}").parameters()) == s.params
    assert [n for n, _ in walk_blocks(spec.blocks)] == [s.name for s in report.all_blocks]
    assert sum(p.numel() for p in model.parameters()) == report.total_params


@pytest.mark.parametrize("tag", sorted(EXAMPLES))
def test_a_kind_labels_scales_diffs_and_draws(tag: str, tmp_path: Path) -> None:
    spec = _spec(EXAMPLES[tag])
    for s in infer(spec).all_blocks:
        assert all(isinstance(label, Label) and label.family in FAMILIES for label in s.layers), s.layers
    wide = apply_width(_spec(EXAMPLES[tag], width=2.0))
    assert not infer(wide).problems and wide.blocks[0].out_channels == 8  # the stem doubled
    assert "total parameters: " in diff_specs(spec, wide)[-1]
    assert draw(spec, tmp_path / "one.svg").stat().st_size > 0


@pytest.mark.parametrize("tag", sorted(EXAMPLES))
def test_every_factory_resolves(tag: str) -> None:
    assert callable(resolve_factory(kinds()[tag.partition("/")[0]]))


def test_child_lists_follow_the_declared_fields() -> None:
    block = _spec(EXAMPLES["parallel"]).blocks[1]
    assert [(c.prefix, c.where, len(c.blocks)) for c in child_lists(block)] == [
        ("branch1.", ("branches", 0), 1), ("branch2.", ("branches", 1), 0), ("branch3.", ("branches", 2), 1)]


def test_a_kind_missing_a_part_is_refused_when_defined() -> None:
    conv = kinds()["conv"]
    parts = {f.name: getattr(conv, f.name) for f in dataclasses.fields(KindDef)}
    with pytest.raises(TypeError):
        KindDef(**{k: v for k, v in parts.items() if k != "width"})  # no silent default for any part
    with pytest.raises(RegistryError, match="kind gate: the model needs `kind: Literal\\['gate'\\]`"):
        KindDef(**{**parts, "tags": ("gate",)})  # BlockSpec's kind is conv
    with pytest.raises(RegistryError, match="frame must be callable"):
        KindDef(**{**parts, "frame": "leaf"})
    with pytest.raises(RegistryError, match="child list 'blocks' is not a field"):
        KindDef(**{**parts, "children": (dataclasses.replace(kinds()["sequence"].children[0]),)})
    assert leaf_frame(None, None, None).style == "leaf"


def test_the_registry_refuses_a_second_definition_and_late_registration() -> None:
    Spec.model_validate({"name": "x", "input": {"channels": 1, "height": 4, "width": 4}, "num_classes": 2,
                         "blocks": [CONV]})  # the union is built: the registry is sealed
    with pytest.raises(RegistryError, match="register kinds before the first spec is validated"):
        register_kind(kinds()["dropout"])


def test_a_label_needs_a_known_family() -> None:
    with pytest.raises(RegistryError, match="unknown family 'colour'"):
        Label("x", "colour")
    assert Label("relu", "activation") == "relu"


def test_the_norm_registry_and_the_norm_union_agree() -> None:
    members = NormSpec.__origin__.__args__  # type: ignore[attr-defined]
    assert {m.model_fields["kind"].annotation.__args__[0] for m in members} == set(NORMS)
    assert all(d.placement == "absent" or ":" in d.factory for d in NORMS.values())
