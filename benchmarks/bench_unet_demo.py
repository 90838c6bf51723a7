"""The segmentation demo: `train unet_shapes` to validation mIoU >= 0.9 within 3 minutes on 2 cores.

    python benchmarks/bench_unet_demo.py [--spec unet_shapes.yaml] [--set PATH=VALUE ...]

Trains the shipped recipe once, in this process, as `python -m builder train unet_shapes` does,
and records per epoch: validation and test mIoU, the wall time since the start (data generation
and model building included) and the CPU seconds this process used. The machine is shared, so
the other processes' CPU use (from /proc/stat) and the load average are recorded too; the CPU
seconds say what the run costs whatever the neighbours do (on 2 idle cores the wall time is
about CPU seconds / 2 or more).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from common import SPECS, Row, emit, parser

from builder.lang.loading import load_spec
from training import TrainingConfig, train
from training.runfiles import read_metrics

GOAL_MIOU, GOAL_SECONDS = 0.9, 180.0


def busy_cpus() -> float | None:
    """CPU-seconds the whole machine has spent busy (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--spec", default="unet_shapes.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE")
    p.add_argument("--out", type=Path, help="keep the run directory here (default: a temporary one)")
    args = p.parse_args()
    spec = load_spec(SPECS / args.spec, args.overrides)
    config = TrainingConfig.model_validate(spec.training or {})
    stamps: list[tuple[float, float]] = []  # (wall, cpu) at each log line
    before, loaded = busy_cpus(), load()
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        train(spec, config, out=out, quiet=True,
              log=lambda line: stamps.append((time.perf_counter() - wall, time.process_time() - cpu)))
        rows = read_metrics(out / "metrics.csv")
    seconds, used = time.perf_counter() - wall, time.process_time() - cpu
    after = busy_cpus()
    others = (after - before - used) / seconds if before is not None and after is not None else None
    epochs = [(int(r["epoch"]), float(r["val_miou"]), float(r["test_miou"] or "nan"), *stamps[i + 1])
              for i, r in enumerate(rows)]
    reached = next((e for e in epochs if e[1] >= GOAL_MIOU), None)
    busy = f"other processes used {others:.2f} CPUs on average" if others is not None else "load unknown"
    command = "python benchmarks/bench_unet_demo.py" + "".join(f" --set {o}" for o in args.overrides)
    if reached is None:
        figure = f"never reached val mIoU {GOAL_MIOU} in {len(epochs)} epochs ({seconds:.0f} s, {used:.0f} CPU-s)"
    else:
        figure = (f"val mIoU {reached[1]:.4f} after epoch {reached[0]}: {reached[3]:.0f} s wall, {reached[4]:.0f} "
                  f"CPU-s (final val {epochs[-1][1]:.4f}, test {epochs[-1][2]:.4f} after {len(epochs)} epochs, "
                  f"{seconds:.0f} s)")
    table = "; ".join(f"epoch {e}: val {v:.4f} test {t:.4f} at {w:.0f} s / {c:.0f} CPU-s" for e, v, t, w, c in epochs)
    met = reached is not None and reached[3] <= GOAL_SECONDS
    emit([Row(f"{spec.name} demo: validation mIoU >= {GOAL_MIOU} (2 cores)", figure,
              f">= {GOAL_MIOU} within {GOAL_SECONDS / 60:.0f} min", met, command,
              f"{table}; {busy} ({loaded} at the start, {load()} at the end)")], args.json)


if __name__ == "__main__":
    main()
