"""Reading spec files: every way a file can be bad is one located line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from builder.lang import yaml_io
from builder.lang.errors import SpecError
from builder.lang.loading import shipped_specs
from builder.lang.yaml_io import MAX_DEPTH, MAX_INT_DIGITS, load_document, parse, parse_scalar

# 9**9 = 387 million values once expanded; refused after MAX_VALUES.
BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


# Every test here runs on both parsers, libyaml's (used when PyYAML has it) and PyYAML's own, except
# the test_parsers_* tests, which compare them.
LOADERS = [yaml_io._PyLoader] + ([yaml_io._CLoader] if yaml.__with_libyaml__ else [])
DEFAULT = yaml_io._Loader


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not metafunc.function.__name__.startswith("test_parsers_"):
        metafunc.parametrize("loader", LOADERS, indirect=True, ids=lambda loader: loader.__name__)


@pytest.fixture(autouse=True)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type:
    chosen = getattr(request, "param", DEFAULT)
    monkeypatch.setattr(yaml_io, "_Loader", chosen)
    return chosen


def test_parsers_libyaml_is_used_when_pyyaml_has_it() -> None:
    assert DEFAULT is (yaml_io._CLoader if yaml.__with_libyaml__ else yaml_io._PyLoader)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml: one parser")
@pytest.mark.parametrize("path", shipped_specs(), ids=lambda p: p.name)
def test_parsers_read_every_shipped_spec_alike(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text()
    read = []
    for loader in LOADERS:
        monkeypatch.setattr(yaml_io, "_Loader", loader)
        doc = parse(text, path.name)
        read.append((doc.data, doc.locs, doc.key_locs))
    assert read[0] == read[1]


def test_errors_are_worded_and_located_as_pyyaml_does() -> None:
    """libyaml's messages leave out the character at fault: a text it refuses is parsed again."""
    with pytest.raises(SpecError) as info:
        parse("name: x\nv: @b\n", "at.yaml")
    assert str(info.value) == "at.yaml:2:4: error: invalid YAML: found character '@' that cannot start any token"
    with pytest.raises(SpecError, match=r"^s.yaml:1:10: error: invalid YAML: expected ',' or '}', but got '\['$"):
        parse("a: {b: 1 [2]}\n", "s.yaml")


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_parsers_libyaml_reads_valid_yaml_that_pyyamls_parser_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tab as separating white space is YAML; PyYAML's parser alone refuses it (docs/reliability.md)."""
    assert parse("a:\t1\n", "tab.yaml").data == {"a": 1}
    monkeypatch.setattr(yaml_io, "_Loader", yaml_io._PyLoader)
    with pytest.raises(SpecError, match=r"found character '\\t' that cannot start any token"):
        parse("a:\t1\n", "tab.yaml")


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


# --- limits: each boundary is tested on both sides (docs/reliability.md) ------------------------


def _nested(levels: int) -> str:
    """`a:` then a value nested `levels` deep in all: flow lists inside block mappings."""
    return "a: " + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "\n"


def test_nesting_up_to_the_limit_is_read_deeper_is_refused() -> None:
    assert parse(_nested(MAX_DEPTH), "ok.yaml").data["a"] is not None
    for text in (_nested(MAX_DEPTH + 1), _nested(5000), "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 300))):
        with pytest.raises(SpecError) as info:
            parse(text, "deep.yaml")
        (diag,) = info.value.diagnostics
        assert diag.message == f"invalid YAML: nested more than {MAX_DEPTH} levels deep"
        assert diag.loc.source == "deep.yaml" and diag.loc.line is not None


def test_an_alias_inside_itself_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(SpecError, match=f"rec.yaml:1:4: error: invalid YAML: nested more than {MAX_DEPTH}"):
        parse("a: &x [*x]\n", "rec.yaml")


def test_integer_digits_up_to_the_limit() -> None:
    assert parse(f"n: {'9' * MAX_INT_DIGITS}\n", "ok.yaml").data["n"] == 10**MAX_INT_DIGITS - 1
    for digits in (MAX_INT_DIGITS + 1, 4301, 100_000):
        with pytest.raises(SpecError) as info:
            parse(f"name: x\nn: -{'1' * digits}\n", "big.yaml")
        message = f"integer with more than {MAX_INT_DIGITS} digits; no spec field needs one"
        assert str(info.value) == f"big.yaml:2:4: error: {message}"
    with pytest.raises(SpecError, match="more than 100 digits"):
        parse(f"n: 0x{'f' * 200}\n", "hex.yaml")


@pytest.mark.parametrize("tag", ["!!int", "!!float", "!!bool", "!!timestamp", "!!binary"])
def test_explicit_tags_with_bad_values(tag: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(f"name: x\nv: {tag} x\n", "tags.yaml")
    (diag,) = info.value.diagnostics
    assert str(diag).startswith("tags.yaml:2:4: error: ")
    assert tag in diag.message or "invalid YAML" in diag.message
    with pytest.raises(SpecError, match=r"tags.yaml:1:1: error: invalid !!int value 'x'$"):
        parse("!!int x: 1\n", "tags.yaml")  # a key too


def test_explicit_tags_with_good_values_still_work() -> None:
    data = parse("a: !!int '3'\nb: !!float '1'\nc: !!bool 'yes'\nd: !!str 4\n", "ok.yaml").data
    assert data == {"a": 3, "b": 1.0, "c": True, "d": "4"}


@pytest.mark.parametrize("char", ["\x07", "\x1b", "\x7f", "\ufffe"])
def test_control_characters_are_located(char: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(f"name: ok\nnum_classes: 3\ninput: a{char}b\n", "ctl.yaml")
    assert str(info.value) == (f"ctl.yaml:3:9: error: invalid YAML: control character U+{ord(char):04X} is not "
                               "allowed (write it as an escape in a quoted string)")
    assert parse('name: "a\\x07b"\n', "ok.yaml").data["name"] == "a\x07b"  # escaped, it is fine


def test_non_regular_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # no writer: opening it for reading the usual way would wait forever
    for path in (fifo, Path("/dev/zero"), Path("/dev/null")):
        with pytest.raises(SpecError) as info:
            load_document(path)
        message = "not a regular file (a pipe, device or socket); specs are read from files"
        assert str(info.value) == f"{path}:1:1: error: {message}"


def test_a_pipe_on_dev_stdin_is_refused(tmp_path: Path) -> None:
    code = "from builder.tools.cli import main; raise SystemExit(main(['validate', '/dev/stdin']))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], input="name: x\n", env=env, capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr) == (2, "/dev/stdin:1:1: error: not a regular file (a pipe, device or "
                                                 "socket); specs are read from files\n")


def test_the_size_limit_counts_bytes_read_not_what_stat_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(yaml_io, "MAX_BYTES", 64)
    status = Path("/proc/self/status")  # a regular file whose stat size is 0, with a few KB of text
    assert status.stat().st_size == 0
    with pytest.raises(SpecError, match="file is larger than"):
        load_document(status)
    exact = _write(tmp_path / "exact.yaml", b"a: " + b"x" * 60 + b"\n")  # 64 bytes: at the limit
    assert load_document(exact).data["a"] == "x" * 60
    with pytest.raises(SpecError, match="file is larger than"):
        load_document(_write(tmp_path / "over.yaml", b"a: " + b"x" * 61 + b"\n"))


def test_paths_the_file_system_refuses(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(SpecError, match=r"a:1:1: error: cannot read file: symlink loop$"):
        load_document(tmp_path / "a")
    with pytest.raises(SpecError, match=r"cannot read file: file name too long$"):
        load_document(tmp_path / ("x" * 300))
    with pytest.raises(SpecError, match=r"the path contains a NUL character$"):
        load_document("a\0b")
