"""Command start-up and meta-device summaries: how long a person waits.

- `summarize arch_specs/alexnet.yaml` vs `python -c "import torch, torchinfo"` (goal <= 1.25x);
- `validate` wall time of alexnet.yaml and of the largest shipped spec (the slowest `validate` of
  the four specs whose load and static inference take longest in this process; goal <= 0.3 s, and
  torch is never imported), next to `python -c pass` (the interpreter alone);
- every command runs as on a user's machine: Python writes and reuses its bytecode caches (a
  PYTHONDONTWRITEBYTECODE in this environment is dropped for the children, and the interleaved
  warm-up round writes the caches), so the figures do not include compiling the project's modules;
- `summarize` on meta of an AlexNet widened to ~10 billion parameters: wall time and peak memory
  (goal < 10 s, < 2 GB).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import SPECS, Row, emit, interleaved, median, parser, python, spread, timed_run

HUGE = "extends: {base}\nname: alexnet_10b\nclassifier: {{hidden: [1000000, 1000]}}\n"
PEAK = (  # VmHWM: peak resident memory of the child alone (ru_maxrss would include its parent's)
    "import re, sys; from builder.tools.cli import main; rc = main(['summarize', sys.argv[1]]); "
    "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(rc)"
)


def slowest_specs(count: int) -> list[Path]:
    """The `count` shipped specs that take longest to load and infer (each timed once, in this process);
    their `validate` wall times are compared in subprocesses, where imports and teardown count too."""
    from builder.lang.loading import load_spec
    from builder.lang.shapes import infer

    def seconds(path: Path) -> float:
        start = time.perf_counter()
        infer(load_spec(path))
        return time.perf_counter() - start

    return sorted(sorted(SPECS.glob("*.yaml")), key=seconds)[-count:]


def user_env() -> dict[str, str]:
    """This environment as a user's shell has it: bytecode caches written and reused."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def startup_rows(repeats: int) -> list[Row]:
    candidates = slowest_specs(4)
    spec, env = str(SPECS / "alexnet.yaml"), user_env()
    contenders = {
        "import": lambda: timed_run([python(), "-c", "import torch, torchinfo"], env),
        "summarize": lambda: timed_run([python(), "-m", "builder", "summarize", spec], env),
        "pass": lambda: timed_run([python(), "-c", "pass"], env),
        "validate": lambda: timed_run([python(), "-m", "builder", "validate", spec], env),
    }
    for path in candidates:
        contenders[path.name] = lambda path=path: timed_run([python(), "-m", "builder", "validate", str(path)], env)
    for warm_up in contenders.values():  # writes the bytecode caches, as a user's first run does
        warm_up()
    runs = interleaved(contenders, repeats)
    ratio = median(runs["summarize"]) / median(runs["import"])
    largest = max((path.name for path in candidates), key=lambda name: median(runs[name]))
    others = ", ".join(f"{name} {median(runs[name]):.3f} s" for name in sorted(p.name for p in candidates))
    return [
        Row("summarize alexnet.yaml vs import torch, torchinfo", f"{ratio:.2f}x "
            f"({median(runs['summarize']):.2f} s vs {median(runs['import']):.2f} s)", "<= 1.25x", ratio <= 1.25,
            "python benchmarks/bench_cli.py",
            f"summarize (device auto: a CPU forward for alexnet) s: {spread(runs['summarize'], '{:.2f}')}; "
            f"import s: {spread(runs['import'], '{:.2f}')}"),
        validate_row("alexnet.yaml", runs["validate"], runs["pass"]),
        validate_row(f"{largest} (the slowest of the {len(candidates)} slowest specs in-process: {others})",
                     runs[largest], runs["pass"]),
    ]


def validate_row(name: str, runs: list[float], bare: list[float]) -> Row:
    return Row(f"validate {name} wall time", f"{median(runs):.3f} s (python -c pass: {median(bare):.3f} s)",
               "<= 0.3 s, no torch import", median(runs) <= 0.3, "python benchmarks/bench_cli.py",
               f"s: {spread(runs, '{:.3f}')}; python -c pass s: {spread(bare, '{:.3f}')}")


def huge_rows(repeats: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alexnet_10b.yaml"
        path.write_text(HUGE.format(base=SPECS / "alexnet.yaml"))
        walls, peaks = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            out = subprocess.run([python(), "-c", PEAK, str(path)], check=True, capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            peaks.append(int(out.stdout.strip().splitlines()[-1]) / 2**20)  # KiB -> GiB
            totals = next(line for line in out.stdout.splitlines() if "parameters (" in line)
            params = totals.split(":")[1].split("(")[0]
    wall, peak = median(walls), max(peaks)
    return [Row(f"summarize on meta, AlexNet widened to{params.rstrip()}", f"{wall:.2f} s, peak {peak:.2f} GiB",
                "< 10 s, < 2 GB", wall < 10 and peak < 2, "python benchmarks/bench_cli.py",
                f"wall s: {spread(walls, '{:.2f}')}")]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    emit(startup_rows(args.repeats) + huge_rows(min(args.repeats, 3)), args.json)


if __name__ == "__main__":
    main()
