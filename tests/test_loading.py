"""extends, block patches, --set overrides and resolve: behaviour and located errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SPECS, TINY_SPEC

from builder.lang.errors import SpecError
from builder.lang.loading import dump_spec, load_spec
from builder.lang.shapes import infer
from builder.lang.yaml_io import MAX_DEPTH

Writer = Callable[..., Path]
DEEP = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)  # one level too deep below `name`


def _error_lines(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return [str(d) for d in info.value.diagnostics]


def test_extends_merges_mappings_and_patches_blocks(write_spec: Writer) -> None:
    write_spec(TINY_SPEC, "base.yaml")
    child = write_spec(
        "extends: base.yaml\nname: child\nclassifier: {dropout: 0.2}\nblocks:\n  1: {out_channels: 12}\n",
        "child.yaml",
    )
    spec = load_spec(child)
    assert spec.name == "child"
    assert [b.out_channels for b in spec.blocks] == [8, 12]
    assert spec.blocks[1].padding == 1  # inherited from the patched block
    assert spec.classifier.hidden == [16] and spec.classifier.dropout == 0.2


def test_chained_extends_and_list_replacement(write_spec: Writer) -> None:
    write_spec(TINY_SPEC, "a.yaml")
    write_spec("extends: a.yaml\nname: b\nnum_classes: 7\n", "b.yaml")
    c = write_spec("extends: b.yaml\nname: c\nblocks:\n  - {out_channels: 5, kernel_size: 1}\n", "c.yaml")
    spec = load_spec(c)
    assert spec.num_classes == 7 and [b.out_channels for b in spec.blocks] == [5]


def test_a_different_kind_replaces_the_inherited_mapping(write_spec: Writer) -> None:
    write_spec(TINY_SPEC + "defaults: {norm: {kind: lrn, size: 3}}\n", "base.yaml")
    spec = load_spec(write_spec("extends: base.yaml\ndefaults: {norm: {kind: batchnorm}}\n", "child.yaml"))
    assert spec.defaults.norm.kind == "batchnorm"


def test_errors_in_a_child_point_into_the_child(write_spec: Writer) -> None:
    write_spec(TINY_SPEC, "base.yaml")
    child = write_spec("extends: base.yaml\nblocks:\n  0: {kernel_size: -1}\n", "child.yaml")
    assert _error_lines(child) == [f"{child}:3:20: error: blocks[0].kernel_size: must be > 0, got -1"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"child.yaml": "extends: missing.yaml\n"}, "base spec 'missing.yaml' not found"),
        ({"child.yaml": "extends: child.yaml\n"}, "extends cycle: child.yaml -> child.yaml"),
        ({"child.yaml": "extends: b.yaml\n", "b.yaml": "extends: child.yaml\n"},
         "extends cycle: child.yaml -> b.yaml -> child.yaml"),
        ({"child.yaml": "extends: 3\n"}, "must be a path to a base spec file"),
        ({"child.yaml": "extends: base.yaml\n", "base.yaml": "name: x\n"}, "base spec 'base.yaml' is invalid"),
        ({"child.yaml": "extends: base.yaml\n", "base.yaml": "a: [\n"}, "base spec 'base.yaml' is invalid"),
        ({"child.yaml": "extends: sub\n", "sub/x.yaml": TINY_SPEC}, "base spec 'sub' is a directory"),
        ({"child.yaml": "extends: loop.yaml\n"}, "loop.yaml: symlink loop"),
        ({"child.yaml": f"extends: {'x' * 300}.yaml\n"}, "file name too long"),
        ({"child.yaml": f"extends: {'x/' * 2100}.yaml\n"}, "the spec path is longer than 4096 characters"),
        ({"child.yaml": 'extends: "a\\0b"\n'}, "the spec path contains a NUL character"),
        ({"child.yaml": "extends: base.yaml\nblocks: {7: {stride: 2}}\n", "base.yaml": TINY_SPEC},
         "a block patch key must be an index from 0 to 1, got 7"),
    ],
)
def test_bad_extends_is_located_at_the_extends_line(
    write_spec: Writer, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop.yaml")
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_spec(text, name)
    child = write_spec(files["child.yaml"], "child.yaml")
    lines = _error_lines(child)
    assert any(message in line for line in lines)
    if "patch" not in message:
        assert lines[0].startswith(f"{child}:1:10: error: extends: ")


def test_invalid_base_also_shows_its_own_problems(write_spec: Writer) -> None:
    base = write_spec("name: x\n", "base.yaml")
    lines = _error_lines(write_spec("extends: base.yaml\n", "child.yaml"))
    assert f"{base}:1:1: error: input: required field is missing" in lines[1:]


def test_overrides_are_yaml_values(write_spec: Writer) -> None:
    path = write_spec(TINY_SPEC)
    spec = load_spec(path, ["num_classes=100", "blocks[0].out_channels=64", "classifier.hidden=[32, 32]",
                            "blocks[1].norm={kind: batchnorm}", "input.width=20"])
    assert spec.num_classes == 100 and spec.blocks[0].out_channels == 64
    assert spec.classifier.hidden == [32, 32] and spec.blocks[1].norm is not None
    assert spec.input.width == 20


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num_classes", "--set num_classes: error: expected PATH=VALUE"),
        ("blocks[9].stride=2", "--set blocks[9].stride=2: error: index 9 is out of range: blocks has 2 items"),
        ("blocks.0.stride=2", "--set blocks.0.stride=2: error: bad field path 'blocks.0.stride'"),
        ("num_classes.x=2", "--set num_classes.x=2: error: cannot index num_classes (a value) with 'x'"),
        ("num_classes=[1", "--set num_classes=[1: error: invalid YAML value '[1'"),
        ("num_classes=true", "--set num_classes=true: error: num_classes: must be an integer, got true"),
        ("blocks[0].kernal_size=3",
         "--set blocks[0].kernal_size=3: error: blocks[0].kernal_size: unknown field 'kernal_size'; "
         "did you mean 'kernel_size'?"),
        ("blocks[0].out_channels=0", "--set blocks[0].out_channels=0: error: blocks[0].out_channels: must be > 0"),
        ("blocks[0]kernel_size=3", "--set blocks[0]kernel_size=3: error: bad field path 'blocks[0]kernel_size'"),
        ("blocks[0].[1]=3", "--set blocks[0].[1]=3: error: bad field path"),
        (f"blocks[{'9' * 5000}].x=1", f"--set blocks[{'9' * 5000}].x=1: error: index out of range in 'blocks["),
        ("extends=other.yaml", "--set extends=other.yaml: error: extends: cannot be set here"),
        ("extends.x=1", "--set extends.x=1: error: extends: cannot be set here"),
        ("nope.deeper=1", "--set nope.deeper=1: error: nope: unknown field 'nope'"),  # not at the file's line 1
        ("classifier.nope.deeper=1", "--set classifier.nope.deeper=1: error: classifier.nope: unknown field 'nope'"),
        (f"name={DEEP}",
         f"--set name={DEEP}: error: invalid YAML value '{DEEP[:80]}': nested more than {MAX_DEPTH} levels"),
        ("name=a\x07", "--set name=a\\x07: error: invalid YAML value 'a\\x07': control character U+0007"),  # escaped
    ],
)
def test_bad_overrides_name_the_argument(write_spec: Writer, override: str, message: str) -> None:
    lines = _error_lines(write_spec(TINY_SPEC), (override,))
    assert len(lines) == 1 and lines[0].startswith(message)


@pytest.mark.slow
def test_resolve_round_trip_for_every_shipped_spec(tmp_path: Path) -> None:
    for path in sorted(SPECS.glob("*.yaml")):
        spec = load_spec(path, ["width=0.75"] if path.name == "alexnet.yaml" else [])
        again_path = tmp_path / path.name
        again_path.write_text(dump_spec(spec))
        again = load_spec(again_path)
        assert again == spec, path.name
        assert infer(again).total_params == infer(spec).total_params


def test_setting_another_kind_replaces_the_mapping(write_spec: Writer) -> None:
    path = write_spec(TINY_SPEC + "defaults: {norm: {kind: lrn, size: 3}, pool: {kind: max, kernel_size: 2}}\n")
    spec = load_spec(path, ["defaults.norm.kind=batchnorm", "defaults.pool.kind=avg", "blocks[0].norm.kind=none"])
    assert spec.defaults.norm.kind == "batchnorm" and spec.defaults.pool.kind == "avg"
    assert spec.defaults.pool.kernel_size == 3  # avg's default: max's fields do not carry over
    assert spec.blocks[0].norm is not None and spec.blocks[0].norm.kind == "none"
    same = load_spec(path, ["defaults.norm.kind=lrn"])  # the same kind keeps its fields
    assert same.defaults.norm.kind == "lrn" and same.defaults.norm.size == 3


def test_a_shape_error_caused_by_a_variant_names_the_variant(write_spec: Writer) -> None:
    base = write_spec(TINY_SPEC, "base.yaml")
    child = write_spec("extends: base.yaml\nname: small\ninput: {channels: 3, height: 2, width: 2}\n", "child.yaml")
    (line,) = _error_lines(child)
    assert line.startswith(f"{base}:5:5: error: blocks[0]: block1: spatial size collapses")
    assert line.endswith(f"; input is set at {child}:3:8")
    (line,) = _error_lines(base, ("input.height=2",))
    assert line.startswith(f"{base}:5:5: error: blocks[0]")
    assert line.endswith("; input.height is set at --set input.height=2")
    (line,) = _error_lines(write_spec(TINY_SPEC.replace("height: 16", "height: 2"), "plain.yaml"))
    assert "is set at" not in line  # nothing elsewhere changed it
