"""Templates and repeats: expansion, resolve's explicit form, and the located errors of bad composite specs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SPECS

from builder.lang.errors import SpecError
from builder.lang.loading import dump_spec, load_spec
from builder.lang.shapes import infer

HEAD = """\
name: t
input: {channels: 3, height: 16, width: 16}
num_classes: 4
classifier: {hidden: [], dropout: 0, adaptive_pool: [1, 1]}
"""

TEMPLATE = """\
templates:
  pair:
    params: [out, stride]
    defaults: {stride: 1}
    block:
      kind: residual
      body:
        - {name: conv1, out_channels: $out, kernel_size: 3, stride: $stride, padding: 1}
        - {name: conv2, out_channels: $out, kernel_size: 3, padding: 1}
"""


def _error(write_spec: Callable[..., Path], body: str) -> str:
    path = write_spec(HEAD + body)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


def test_repeat_makes_a_sequence_of_copies_and_patches_only_the_first(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(HEAD + TEMPLATE + """\
blocks:
  - kind: repeat
    name: stage
    times: 3
    block: {kind: use, template: pair, args: {out: 8}}
    first: {args: {stride: 2}}
"""))
    stage = spec.blocks[0]
    assert stage.kind == "sequence" and [b.kind for b in stage.blocks] == ["residual"] * 3
    assert [b.body[0].stride for b in stage.blocks] == [2, 1, 1]
    shapes = {s.name: s for s in infer(spec).all_blocks}
    assert shapes["stage.block1"].out_shape == (8, 8, 8)
    assert shapes["stage.block1.body.conv1"].in_shape == (3, 16, 16)
    assert shapes["stage.block3.body.conv2"].out_shape == (8, 8, 8)


def test_resolve_form_is_explicit_and_loads_back_to_the_same_spec(tmp_path: Path) -> None:
    spec = load_spec(SPECS / "resnet18.yaml")
    text = dump_spec(spec)
    assert "templates" not in text and "kind: use" not in text and "kind: repeat" not in text
    (tmp_path / "explicit.yaml").write_text(text)
    assert load_spec(tmp_path / "explicit.yaml") == spec


def test_a_list_patch_in_first_reaches_a_body_item(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(HEAD + """\
blocks:
  - kind: repeat
    times: 2
    block: {kind: residual, body: [{out_channels: 3, kernel_size: 3, padding: 1}, {out_channels: 3, kernel_size: 1}]}
    first: {body: {1: {out_channels: 6}}}
"""))
    assert [[b.out_channels for b in r.body] for r in spec.blocks[0].blocks] == [[3, 6], [3, 3]]


@pytest.mark.parametrize(("body", "line", "message"), [
    ("blocks:\n  - kind: residual\n    shortcut: identity\n    body: [{out_channels: 8, kernel_size: 3, padding: 1}]\n",
     6, "blocks[0]: residual add of 8x16x16 and 3x16x16"),
    ("blocks:\n  - kind: parallel\n    branches: [[{out_channels: 4, kernel_size: 3}],\n"
     "               [{out_channels: 4, kernel_size: 1}]]\n",
     6, "concat of branches with spatial sizes 14x14 and 16x16"),
    ("blocks:\n  - kind: parallel\n    merge: add\n    branches: [[{out_channels: 4, kernel_size: 1}], []]\n",
     6, "parallel add of 4x16x16 and 3x16x16"),
    ("blocks:\n  - {kind: repeat, times: 0, block: {out_channels: 4, kernel_size: 1}}\n",
     6, "blocks[0].times: must be > 0, got 0"),
    ("blocks:\n  - {kind: parallel, branches: []}\n", 6, "blocks[0].branches: must have at least 1 item"),
    (TEMPLATE + "blocks:\n  - {kind: use, template: pear, args: {out: 4}}\n",
     15, "unknown template 'pear' (templates: pair); did you mean 'pair'?"),
    (TEMPLATE + "blocks:\n  - {kind: use, template: pair, args: {}}\n", 15, "missing argument of template 'pair': out"),
    (TEMPLATE + "blocks:\n  - {kind: use, template: pair, args: {out: 4, outt: 5}}\n",
     15, "template 'pair' has no parameter 'outt' (its params: out, stride); did you mean 'out'?"),
    ("templates:\n  loop: {block: {kind: use, template: loop}}\nblocks:\n  - {kind: use, template: loop}\n",
     6, "template 'loop' uses itself (loop -> loop)"),
    ("templates:\n  t: {params: [a, b], block: {out_channels: $a, kernel_size: 1}}\nblocks:\n"
     "  - {kind: use, template: t, args: {a: 1, b: 2}}\n", 6,
     "parameter 'b' of template 't' is never used in its block"),
    ("templates:\n  t: {params: [a], block: {out_channels: $a, kernel_size: $k}}\nblocks:\n"
     "  - {kind: use, template: t, args: {a: 1}}\n", 6,
     "'$k' is not a parameter of template 't' (its params: a)"),
    ("templates:\n  t: {params: [n], block: {kind: repeat, times: $n, block: {out_channels: 4, kernel_size: 1}}}\n"
     "blocks:\n  - {kind: use, template: t, args: {n: null}}\n", 8,
     "times: must be an integer from 1 to 10,000, got None"),
    ("blocks:\n  - {name: x, out_channels: 4, kernel_size: 1}\n  - {name: x, out_channels: 4, kernel_size: 1}\n",
     7, "blocks[1].name: 'x' is already the name of blocks[0]"),
])
def test_bad_composite_specs_give_one_located_line(
    write_spec: Callable[..., Path], body: str, line: int, message: str
) -> None:
    text = _error(write_spec, body)
    assert message in text
    first = next(x for x in text.splitlines() if message in x)
    assert f"spec.yaml:{line}:" in first, first


def test_the_cli_exits_2_with_the_located_line(
    write_spec: Callable[..., Path], cli: Callable[..., tuple[int, str, str]]
) -> None:
    bad = "blocks:\n  - kind: residual\n    shortcut: identity\n    body: [{out_channels: 8, kernel_size: 1}]\n"
    path = write_spec(HEAD + bad)
    code, out, err = cli("validate", path)
    assert code == 2 and out == ""
    assert err.strip() == f"{path}:6:5: error: blocks[0]: residual add of 8x16x16 and 3x16x16"


def test_validating_a_composite_canon_spec_imports_no_torch() -> None:
    import subprocess
    import sys

    code = ("import sys; from builder.tools.cli import main; rc = main(['validate', 'resnet50']);"
            "assert rc == 0 and 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
