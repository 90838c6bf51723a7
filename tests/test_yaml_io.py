"""Reading spec files: every way a file can be bad is one located line, exit 2."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lang.errors import SpecError
from builder.lang.yaml_io import load_document, parse, parse_scalar

# 9**9 = 387 million values once expanded; refused after MAX_VALUES.
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def test_positions_of_values_and_keys() -> None:
    doc = parse("name: x\nblocks:\n  - {out_channels: 8, kernel_size: 3}\n", "s.yaml")
    assert doc.data == {"name": "x", "blocks": [{"out_channels": 8, "kernel_size": 3}]}
    loc = doc.locate(("blocks", 0, "kernel_size"))
    assert (loc.line, loc.col) == (3, 36)
    key = doc.locate(("blocks", 0, "kernel_size"), at_key=True)
    assert (key.line, key.col) == (3, 23)
    assert doc.locate(("blocks", 0, "missing")) == doc.locate(("blocks", 0))


def test_scientific_float_without_dot() -> None:
    assert parse("a: 1e-4\nb: 3\n", "s.yaml").data == {"a": 1e-4, "b": 3}


def test_merge_keys_work_and_own_keys_override() -> None:
    doc = parse("base: &b {x: 1, y: 2}\nother: {<<: *b, y: 3}\n", "s.yaml")
    assert doc.data["other"] == {"x": 1, "y": 3}
    with pytest.raises(SpecError, match="duplicate key 'y'"):
        parse("base: &b {x: 1}\nother: {<<: *b, y: 3, y: 4}\n", "s.yaml")


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: [1, 2\n", "invalid YAML", 2),
        ("", "file is empty", 1),
        ("# only a comment\n", "file is empty", 1),
        ("- 1\n- 2\n", "top level must be a mapping", 1),
        ("just text\n", "top level must be a mapping", 1),
        ("a: 1\na: 2\n", "duplicate key 'a'", 2),
        ("x: !!python/object/apply:os.system [echo hi]\n", "not allowed", 1),
        ("x: !!python/name:os.system\n", "not allowed", 1),
        ("x: !custom 3\n", "not allowed", 1),
        (BILLION_LAUGHS, "alias", 1),
    ],
)
def test_bad_yaml_is_one_located_error(text: str, message: str, line: int) -> None:
    with pytest.raises(SpecError) as info:
        parse(text, "bad.yaml")
    (diag,) = info.value.diagnostics
    assert message in diag.message
    assert str(diag).startswith(f"bad.yaml:{line}:")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.yaml", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "bin.yaml", b"\x00\x01\x02"), "binary file"),
        (lambda d: _write(d / "latin.yaml", b"name: caf\xe9\n"), "not UTF-8"),
    ],
)
def test_unreadable_files(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(SpecError) as info:
        load_document(path)
    assert str(info.value) == f"{path}:1:1: error: {info.value.diagnostics[0].message}"
    assert message in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_permissions(tmp_path: Path) -> None:
    path = _write(tmp_path / "locked.yaml", b"a: 1\n")
    path.chmod(0)
    with pytest.raises(SpecError, match="cannot read"):
        load_document(path)


def test_parse_scalar_reads_yaml_values() -> None:
    assert parse_scalar("64", "--set") == 64
    assert parse_scalar("true", "--set") is True
    assert parse_scalar("[512, 512]", "--set") == [512, 512]
    assert parse_scalar("{kind: none}", "--set") == {"kind": "none"}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
