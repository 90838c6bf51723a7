"""`bench`: options, throughputs, speed-ups, the recommendation, the CLI table, JSON and bad flags.

Kept fast: a 3x16x16 spec of two 8-channel blocks, batch 4, 2 steps; compile is not run here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.lang.loading import load_spec
from builder.tools.bench import MIN_SPEEDUP, OPTIONS, BenchError, BenchResult, OptionResult, bench, parse_options

SPEC = """\
name: tiny_lrn
input: {channels: 3, height: 16, width: 16}
num_classes: 4
defaults:
  norm: {kind: lrn, size: 5}
blocks:
  - {out_channels: 8, kernel_size: 3, padding: 1, pool_and_norm: true}
  - {out_channels: 8, kernel_size: 3, padding: 1}
classifier: {hidden: [16], dropout: 0.1}
"""
FAST = ("--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def result(spec_path: Path) -> BenchResult:
    return bench(load_spec(spec_path), batch_size=4, steps=2, warmup=1, repeats=2, device="cpu",
                 options="fp32,channels_last,bf16,fp16")


def test_every_option_measured_or_skipped_with_a_reason(result: BenchResult) -> None:
    by_name = {o.name: o for o in result.options}
    assert list(by_name) == ["fp32", "channels_last", "bf16", "fp16"]
    for name in ("fp32", "channels_last", "bf16"):
        o = by_name[name]
        assert o.skipped is None and len(o.rates) == 2 and all(r > 0 for r in o.rates)
        assert o.median is not None and o.speedup is not None and o.speedup > 0
    assert by_name["fp32"].speedup == 1.0
    assert by_name["fp16"].skipped and "CUDA" in by_name["fp16"].skipped and by_name["fp16"].median is None


def test_recommendation_is_a_measured_option(result: BenchResult) -> None:
    measured = [o.name for o in result.options if o.median is not None]
    assert result.recommendation in measured
    verb = "" if result.recommendation == "fp32" else "use "
    assert result.recommendation_line().startswith(f"recommendation: {verb}{result.recommendation}")


def test_to_dict_is_json(result: BenchResult) -> None:
    data = json.loads(json.dumps(result.to_dict()))
    assert data["batch_size"] == 4 and data["repeats"] == 2 and data["device"] == "cpu"
    assert [o["name"] for o in data["options"]] == ["fp32", "channels_last", "bf16", "fp16"]
    assert data["recommendation"] == result.recommendation
    assert data["other_cpus"] is None or data["other_cpus"] >= 0  # CPUs other processes used while timing


def _fake(speedups: dict[str, float], skipped: tuple[str, ...] = ()) -> BenchResult:
    options = [OptionResult(n, rates=[100.0 * s], speedup=s, skipped="x" if n in skipped else None)
               for n, s in speedups.items()]
    return BenchResult("fake", "cpu", 4, 2, 1, 1, 1, None, options)


def test_recommends_the_fastest_option_over_the_threshold_else_fp32() -> None:
    assert _fake({"fp32": 1.0, "channels_last": 1.2, "bf16": 1.5}).recommendation == "bf16"
    assert _fake({"fp32": 1.0, "bf16": MIN_SPEEDUP - 0.01}).recommendation == "fp32"
    assert _fake({"fp32": 1.0, "compile": 2.0, "bf16": 1.1}, skipped=("compile",)).recommendation == "bf16"


def test_parse_options() -> None:
    assert parse_options("all") == list(OPTIONS)
    assert parse_options("bf16, channels_last") == ["fp32", "channels_last", "bf16"]  # baseline added, table order
    with pytest.raises(BenchError, match="did you mean 'channels_last'"):
        parse_options("fp32,channel_last")


def test_bench_checks_its_counts_when_called_directly(spec_path: Path) -> None:
    """The command line bounds --batch-size (training.flags); a call from Python meets bench's own check."""
    for counts, message in (({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
                            ({"batch_size": 10**12}, "--batch-size must be <= 100,000, got 1,000,000,000,000"),
                            ({"warmup": -1}, "--warmup must be >= 0, got -1")):
        with pytest.raises(BenchError, match=f"^{message}$"):
            bench(load_spec(spec_path), device="cpu", **counts)


def test_cli_prints_the_table_and_writes_json(
    cli: Callable[..., tuple[int, str, str]], spec_path: Path, tmp_path: Path
) -> None:
    out_json = tmp_path / "bench.json"
    code, out, err = cli("bench", spec_path, *FAST, "--options", "fp32,bf16", "--json", out_json)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("tiny_lrn on cpu")
    assert lines[1].split()[:2] == ["option", "images/s"]
    assert [line.split()[0] for line in lines[2:4]] == ["fp32", "bf16"]
    assert lines[2].split()[3] == "1.00x" and lines[-2].startswith("recommendation: ")  # a busy note may precede
    assert lines[-1] == f"wrote {out_json}"
    assert [o["name"] for o in json.loads(out_json.read_text())["options"]] == ["fp32", "bf16"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--options", "fp32,bf61"), "error: unknown option 'bf61'; expected fp32, channels_last, bf16, fp16, "
                                     "compile or all; did you mean 'bf16'?"),
        (("--batch-size", "0"), "--batch-size 0: error: must be from 1 to 65,536, got 0"),  # training.flags
        (("--repeats", "0"), "error: --repeats must be >= 1, got 0"),
        (("--batch-size", str(10**12)), "--batch-size 1000000000000: error: must be from 1 to 65,536, got "
                                        "1,000,000,000,000"),
        (("--steps", "100001"), "error: --steps must be <= 100,000, got 100,001"),
        (("--device", "nonsense"), "error: --device nonsense: unknown device 'nonsense'; expected auto, cpu, cuda, "
         "cuda:N or mps"),
    ],
)
def test_cli_bad_flags_exit_2_one_line(
    cli: Callable[..., tuple[int, str, str]], spec_path: Path, flags: tuple[str, ...], message: str
) -> None:
    code, out, err = cli("bench", spec_path, *flags)
    assert (code, out, err) == (2, "", message + "\n")
