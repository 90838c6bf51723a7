"""Property-based fuzzing of every shipped spec (issue 12.10): `validate` exits 0 or 2, never a traceback.

Each example takes a shipped spec and mutates it at the data level (keys removed, added or
replaced by values of every YAML type and size, deep nesting), then at the text level (explicit
and unknown tags, duplicated lines, control characters, NULs, unicode, huge integers, aliases,
truncation), plus `--set` overrides of random paths and values. Every error line must be located
(`FILE:LINE:COL: error: ...` or `--set ARG: error: ...`) and every run quick. Derandomized, so CI
is reproducible; BUILDER_FUZZ_EXAMPLES=5000 explores more (and with fresh randomness).
"""

from __future__ import annotations

import io
import os
import re
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import SPECS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.tools.cli import main

SPEC_FILES = sorted(SPECS.rglob("*.yaml"))
EXAMPLES = int(os.environ.get("BUILDER_FUZZ_EXAMPLES", "400"))
LOCATED = re.compile(r"^(?:.+:\d+:\d+|--set .+): error: \S.*$")

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**150), max_value=10**150),
    st.floats(), st.text(max_size=12), st.sampled_from(["lrn", "max", "none", "batchnorm", "relu", "", "1e-4"]),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SNIPPETS = st.one_of(
    st.sampled_from([
        "num_classes: !!int x", "width: !!float x", "name: !!bool x", "name: !!timestamp x", "name: !!binary x",
        "name: !!python/object/apply:os.system [echo hi]", "name: !custom 1", "blocks: !!set {a, b}",
        "x: &a [1, 2]\ny: [*a, *a]", "a: &a [*a]", "<<: {num_classes: 3}", "? [a, b]\n: 1", "- 1", "---\n- 2",
        "name: 'unterminated", "name: \"\\x07\"", "extends: /dev/zero", "extends: .", "extends: \"a\\0b\"",
    ]),
    st.integers(1, 400).map(lambda n: "deep: " + "[" * n + "]" * n),
    st.integers(1, 6000).map(lambda n: f"num_classes: {'7' * n}"),
    st.text(min_size=1, max_size=20).map(lambda t: f"name: {t}"),
    st.text(min_size=1, max_size=20),
    st.integers(0, 0x9F).map(chr),
)


def _mutate(data: st.DataObject, value: Any, depth: int = 0) -> Any:
    """Replace, remove, add or descend at one randomly chosen place of the document."""
    if isinstance(value, dict) and value:
        key = data.draw(st.sampled_from(sorted(value, key=str)))
        action = data.draw(st.sampled_from(["descend", "descend", "delete", "replace", "add"]))
        if action == "delete":
            return {k: v for k, v in value.items() if k != key}
        if action == "add":
            return {**value, data.draw(st.text(max_size=10)): data.draw(VALUES)}
        new = _mutate(data, value[key], depth + 1) if action == "descend" else data.draw(VALUES)
        return {**value, key: new}
    if isinstance(value, list) and value:
        i = data.draw(st.integers(0, len(value) - 1))
        new = _mutate(data, value[i], depth + 1) if data.draw(st.booleans()) else data.draw(VALUES)
        return [*value[:i], new, *value[i + 1:]]
    return data.draw(VALUES)


def _text_mutation(data: st.DataObject, text: str) -> str:
    lines = text.splitlines()
    kind = data.draw(st.sampled_from(["none", "insert", "insert", "duplicate", "truncate", "char"]))
    at = data.draw(st.integers(0, len(lines)))
    if kind == "insert":
        return "\n".join([*lines[:at], data.draw(SNIPPETS), *lines[at:]]) + "\n"
    if kind == "duplicate" and lines:
        return "\n".join([*lines[:at], lines[min(at, len(lines) - 1)], *lines[at:]]) + "\n"
    if kind == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    if kind == "char":
        pos = data.draw(st.integers(0, len(text)))
        return text[:pos] + data.draw(st.sampled_from(["\0", "\x07", "\x1b", "\x7f", "\t", "\ufeff", "\u2028"]))
    return text


def _overrides(data: st.DataObject) -> list[str]:
    paths = st.sampled_from(["num_classes", "blocks[0].kernel_size", "blocks[9].x", "defaults.norm.kind", "input",
                             "classifier.hidden", "extends", "blocks[0]stride", "training.epochs", "nope.deeper"])
    values = st.one_of(st.text(max_size=12), VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))
    return data.draw(st.lists(st.tuples(paths, values).map(lambda pv: f"{pv[0]}={pv[1]}"), max_size=2))


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="BUILDER_FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_validate_survives_mutated_shipped_specs(tmp_path: Path, data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(SPEC_FILES))
    doc = _mutate(data, yaml.safe_load(source.read_text()))
    text = _text_mutation(data, yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    args = ["validate", str(path)]
    for override in _overrides(data):
        args += ["--set", override]
    out, err = io.StringIO(), io.StringIO()
    start = time.process_time()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)  # any exception other than the project's errors fails the test: a traceback
    assert time.process_time() - start < 60  # a guard against runaway work (ms normally), not a speed check
    assert code in (0, 2)
    if code == 0:
        assert err.getvalue() == "" and out.getvalue().startswith(f"{path}: OK: ")
    else:
        lines = err.getvalue().splitlines()
        assert lines and all(LOCATED.match(line) for line in lines), lines
