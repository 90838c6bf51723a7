"""Run every benchmark script and write BENCHMARKS.md from their rows.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--output BENCHMARKS.md] [--idle-wait S]

Each script runs as its own subprocess with --json (one at a time, so none disturbs another);
the rows it writes become the table of BENCHMARKS.md, with the machine, the date, how busy
the machine was, and each row's reproducing command. Before starting, it waits (up to
--idle-wait seconds) until other processes use less than a quarter of a CPU. --quick takes
fewer repeats and smaller sizes (for development; such a file says so); --only runs the
named scripts (builder, trainer, image_folder, time_to_accuracy, lrn, cli, canon, unet, unet_demo,
seg_predict).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import ROOT, Row

# name: (script, arguments of a full run, arguments of a --quick run)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "builder": ("bench_builder.py", [], ["--repeats", "2"]),
    "trainer": ("bench_trainer.py", [],
                ["--repeats", "2", "--data", "fake", "--train-size", "1024", "--test-size", "256"]),
    "image_folder": ("bench_image_folder.py", [],
                     ["--repeats", "1", "--train-per-class", "100", "--test-per-class", "20"]),
    "time_to_accuracy": ("bench_time_to_accuracy.py", [], ["--epochs", "1"]),
    "lrn": ("bench_lrn.py", [], ["--repeats", "2"]),
    "cli": ("bench_cli.py", [], ["--repeats", "2"]),
    "canon": ("bench_canon.py", [], ["--repeats", "2", "--size", "64", "--steps", "2"]),
    "unet": ("bench_unet.py", [], ["--repeats", "2", "--steps", "1"]),
    "unet_demo": ("bench_unet_demo.py", [], ["--set", "training.epochs=1"]),
    "seg_predict": ("bench_seg_predict.py", [], ["--repeats", "1", "--count", "100"]),
}
IDLE_CPUS = 0.25  # other processes' CPU use below which the machine counts as idle


@dataclass
class Ran:
    """One script's rows, how long it took and how busy the rest of the machine was meanwhile."""

    name: str
    rows: list[Row]
    seconds: float
    other_cpus: float | None


def busy_cpus() -> float | None:
    """CPU-seconds per second the whole machine spent busy (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def others_during(seconds: float) -> float | None:
    """Average CPUs that other processes kept busy over the next `seconds` (this one sleeps)."""
    before = busy_cpus()
    time.sleep(seconds)
    after = busy_cpus()
    return None if before is None or after is None else (after - before) / seconds


def wait_until_idle(limit: float) -> str:
    """Wait until the machine is idle (or `limit` s passed); a line saying how it went."""
    start = time.monotonic()
    while True:
        others = others_during(3.0)
        waited = time.monotonic() - start
        if others is None:
            return "machine load unknown (no /proc/stat)"
        if others < IDLE_CPUS:
            return f"idle at the start (other processes used {others:.2f} CPUs; waited {waited:.0f} s)"
        if waited >= limit:
            return f"NOT idle at the start: other processes used {others:.2f} CPUs after waiting {waited:.0f} s"
        print(f"waiting for an idle machine: other processes use {others:.2f} CPUs", flush=True)


def run_one(name: str, quick: bool) -> Ran:
    """Run one script with --json; a failure becomes a row that says so."""
    script, full, fast = BENCHMARKS[name]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--json", str(out), *(fast if quick else full)]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        busy, children, start = busy_cpus(), _children_cpu(), time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        others = _others(busy, children, seconds)
        print(done.stdout, end="", flush=True)
        if done.returncode != 0 or not out.is_file():
            tail = " ".join(done.stderr.strip().splitlines()[-3:])
            failed = Row(script, f"FAILED (exit {done.returncode})", "-", False, f"python benchmarks/{script}", tail)
            print(done.stderr, file=sys.stderr)
            return Ran(name, [failed], seconds, others)
        return Ran(name, [Row(**r) for r in json.loads(out.read_text())], seconds, others)


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _others(busy: float | None, children: float, seconds: float) -> float | None:
    after = busy_cpus()
    if busy is None or after is None:
        return None
    return max(0.0, (after - busy) - (_children_cpu() - children)) / seconds


def machine() -> str:
    """CPU model, cores, memory, OS, Python and torch versions."""
    import torch

    model, memory = platform.processor() or platform.machine(), ""
    try:
        cpuinfo, meminfo = Path("/proc/cpuinfo").read_text(), Path("/proc/meminfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
        mem = next(int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal"))
        memory = f", {mem / 2**20:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{model}, {os.cpu_count()} CPU cores{memory}, no GPU used; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def markdown(ran: list[Ran], args: argparse.Namespace, idle: str, started: str, total: float) -> str:
    partial = args.quick or args.only
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "") + "".join(
        f" --only {n}" for n in args.only or [])
    lines = [
        "# Benchmarks", "",
        f"Written by `{command}` (one command; every figure below comes from that run).", "",
        *(["**A partial or quick run, for development: not the reference figures.**", ""] if partial else []),
        f"- Machine: {machine()}",
        f"- Started {started}, took {total / 60:.1f} min; {idle}.",
        "- Every comparison runs its contenders interleaved (round-robin) in one process; figures are "
        "medians of the repeats, and ratios are of medians.", "",
        "| benchmark | figure | goal | met | command |", "|---|---|---|---|---|",
    ]
    for r in (row for one in ran for row in one.rows):
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        lines.append(f"| {_cell(r.name)} | {_cell(r.figure)} | {_cell(r.goal)} | {met} | `{r.command}` |")
    lines += ["", "## Details", ""]
    for one in ran:
        busy = "" if one.other_cpus is None else f", other processes used {one.other_cpus:.2f} CPUs on average"
        lines += [f"### {one.name} ({BENCHMARKS[one.name][0]}: {one.seconds:.0f} s{busy})", ""]
        for r in one.rows:
            lines += [f"- **{r.name}**: {r.figure}", *([f"\n{r.details}\n"] if r.details else [])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (development)")
    p.add_argument("--only", action="append", choices=list(BENCHMARKS), help="run only this script (repeatable)")
    p.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md", help="where to write (default BENCHMARKS.md)")
    p.add_argument("--idle-wait", type=float, default=600.0, help="wait at most this long for an idle machine")
    args = p.parse_args()
    started, start = time.strftime("%Y-%m-%d %H:%M %Z"), time.perf_counter()
    idle = wait_until_idle(args.idle_wait)
    print(idle, flush=True)
    ran = [run_one(name, args.quick) for name in (args.only or BENCHMARKS)]
    args.output.write_text(markdown(ran, args, idle, started, time.perf_counter() - start))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
