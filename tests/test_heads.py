"""The pluggable head: classifier (also the top-level `classifier:` key), conv (SqueezeNet's) and none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from builder.lang.errors import BuilderError
from builder.lang.heads import HEADS
from builder.lang.loading import dump_spec, load_spec
from builder.lang.shapes import infer
from builder.model.build import build_model
from builder.model.summary import summarize
from builder.tools.draw import draw

Cli = Callable[..., tuple[int, str, str]]
BASE = """\
name: h
input: {channels: 3, height: 16, width: 16}
blocks:
  - {out_channels: 8, kernel_size: 3, stride: 2, padding: 1}
  - {out_channels: 12, kernel_size: 3, padding: 1}
"""


def _load(write_spec: Callable[..., Path], tail: str) -> object:
    return load_spec(write_spec(BASE + tail))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_classifier_key_and_a_classifier_head_build_the_same(write_spec: Callable[..., Path]) -> None:
    old = load_spec(write_spec(BASE + "num_classes: 5\nclassifier: {hidden: [7], dropout: 0.1}\n", "a.yaml"))
    new = load_spec(write_spec(BASE + "num_classes: 5\nhead: {kind: classifier, hidden: [7], dropout: 0.1}\n"))
    a, b = build_model(old), build_model(new)
    assert [n for n, _ in a.named_modules()] == [n for n, _ in b.named_modules()]
    assert _params(a) == _params(b) == infer(new).total_params
    assert "classifier: same" in __import__("builder.lang.diff", fromlist=["x"]).diff_specs(old, new)


def test_a_lone_linear_gets_its_dropout_before_it(write_spec: Callable[..., Path]) -> None:
    """classifier: {hidden: []} with dropout > 0 used to build no Dropout; now drop1 -> fc1, as torchvision."""
    spec = load_spec(write_spec(BASE + "num_classes: 5\nclassifier: {hidden: [], dropout: 0.5}\n"))
    model = build_model(spec)
    assert [n for n, _ in model.classifier.named_children()] == ["drop1", "fc1"]
    assert infer(spec).head.labels[-2:] == ("dropout 0.5", "linear 768 \u2192 5")  # type: ignore[union-attr]
    unchanged = load_spec(write_spec(BASE + "num_classes: 5\nclassifier: {hidden: [], dropout: 0}\n", "b.yaml"))
    assert [n for n, _ in build_model(unchanged).classifier.named_children()] == ["fc1"]


def test_a_conv_head_is_squeezenets(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = load_spec(write_spec(BASE + "num_classes: 5\nhead: {kind: conv, dropout: 0.5}\n"))
    report = infer(spec)
    model = build_model(spec).eval()
    assert [n for n, _ in model.classifier.named_children()] == ["drop", "conv", "act", "pool"]
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    assert report.flatten == 5 and report.classifier_params == 12 * 5 + 5 == _params(model.classifier)
    assert report.classifier_mult_adds == 12 * 5 * 8 * 8
    assert _params(model) == report.total_params
    assert summarize(spec, device="meta").ok
    assert "conv 5 k1" in draw(spec, tmp_path / "h.svg").read_text()


def test_no_head_outputs_the_last_feature_map(write_spec: Callable[..., Path], cli: Cli, tmp_path: Path) -> None:
    path = write_spec(BASE + "head: {kind: none}\n")
    spec = load_spec(path)
    report = infer(spec)
    model = build_model(spec)
    assert [n for n, _ in model.named_children()] == ["features"]
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 12, 8, 8) and report.head.out == (12, 8, 8)  # type: ignore[union-attr]
    assert report.total_params == _params(model) and report.classifier_params == 0
    assert summarize(spec, device="meta").ok
    assert "12 x 8 x 8" in draw(spec, tmp_path / "f.svg").read_text()
    code, out, _ = cli("validate", path)
    assert code == 0 and out.endswith("output 12x8x8, no head, 1,100 parameters\n")
    with pytest.raises(BuilderError, match="has no classes"):
        _ = spec.num_classes
    again = write_spec(dump_spec(spec), "again.yaml")  # a run directory's spec.yaml loads back
    assert load_spec(again) == spec and "num_classes" not in yaml.safe_load(again.read_text())


@pytest.mark.parametrize(
    ("tail", "line"),
    [
        ("num_classes: 3\nhead: {kind: none}\n", "6:14: error: num_classes: a spec with head kind none outputs"),
        ("head: {kind: none}\nclassifier: {hidden: []}\n",
         "7:13: error: classifier: a spec with head kind none has no classifier; remove classifier"),
        ("head: {kind: none, hidden: [10]}\n", "6:20: error: head.hidden: unknown field 'hidden'"),
        ("num_classes: 3\nhead: {kind: conv}\nclassifier: {dropout: 0.1}\n",
         "8:13: error: classifier: a spec with head kind conv has its conv head instead; remove classifier"),
        ("head: {kind: conv}\n", "1:1: error: num_classes: required field is missing"),
        ("num_classes: 3\nclassifier: {scale: 0}\n", "7:21: error: classifier.scale: must be > 0.0, got 0"),
        ("num_classes: 3\nhead: {kind: conv, p: 0.1}\n", "7:20: error: head.p: unknown field 'p'"),
        ("num_classes: 3\nhead: {kind: convv}\n", "7:14: error: head.kind: unknown kind 'convv'; expected one of "
         "classifier, conv, none, dense; did you mean 'conv'?"),
    ],
)
def test_a_head_mistake_is_one_located_line(write_spec: Callable[..., Path], cli: Cli, tail: str, line: str) -> None:
    path = write_spec(BASE + tail)
    code, _, err = cli("validate", path)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"{path}:{line}"), err


def test_a_classifier_without_biases_and_with_a_scale_is_airbenchs(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(BASE + "num_classes: 5\nclassifier: {hidden: [7], dropout: 0, bias: false, "
                                "scale: 0.25}\n"))
    model = build_model(spec).eval()
    fc1, fc2 = model.classifier.fc1, model.classifier.fc2
    assert fc1.bias is None and fc2.bias is None and _params(model) == infer(spec).total_params
    x = torch.randn(2, *model.features(torch.zeros(1, 3, 16, 16)).shape[1:])
    want = fc2(model.classifier.act1(fc1(x.flatten(1)))) * 0.25
    assert torch.equal(model.classifier(x.flatten(1)), want)
    assert infer(spec).head.labels[-1] == "scale 0.25"  # type: ignore[union-attr]


def test_a_variant_switches_its_base_to_no_head(write_spec: Callable[..., Path]) -> None:
    write_spec(BASE + "num_classes: 4\nclassifier: {hidden: [9]}\n", "base.yaml")
    spec = load_spec(write_spec("extends: base.yaml\nname: feats\nnum_classes: null\nclassifier: null\n"
                                "head: {kind: none}\n", "feats.yaml"))
    assert spec.head is not None and spec.head.kind == "none" and infer(spec).classifier_params == 0


def test_every_head_has_a_factory() -> None:
    from importlib import import_module

    for head in HEADS.values():
        module, _, name = head.factory.partition(":")
        assert callable(getattr(import_module(module), name))


CLASSES = BASE + "  - {out_channels: num_classes, kernel_size: 1}\n"


def test_a_conv_to_num_classes_follows_the_classes_and_not_the_width(write_spec: Callable[..., Path]) -> None:
    path = write_spec(CLASSES + "num_classes: 5\nclassifier: {hidden: [], adaptive_pool: [1, 1]}\n")
    spec = load_spec(path)
    assert infer(spec).blocks[-1].out_shape == (5, 8, 8) and "conv 5 k1 s1 p0" in infer(spec).blocks[-1].layers
    assert infer(load_spec(path, ["num_classes=7"])).blocks[-1].out_shape == (7, 8, 8)
    wide = infer(load_spec(path, ["width=2"]))
    assert [b.out_shape[0] for b in wide.blocks] == [16, 24, 5]
    model = build_model(spec)
    assert model.features.block3.conv.out_channels == 5 and infer(spec).total_params == _params(model)
    assert "out_channels: num_classes" in dump_spec(spec)  # a dumped spec still follows --set num_classes
    assert load_spec(write_spec(dump_spec(spec), "dumped.yaml")) == spec


def test_a_conv_to_num_classes_without_classes_is_one_located_line(write_spec: Callable[..., Path],
                                                                   cli: Cli) -> None:
    path = write_spec(CLASSES + "head: {kind: none}\n")
    code, out, err = cli("validate", path)
    assert (code, out) == (2, "")
    assert err == (f"{path}:6:20: error: blocks[2].out_channels: block3: out_channels: num_classes needs the "
                   "spec's num_classes, but a spec with head kind none has no classes (give a number)\n")
