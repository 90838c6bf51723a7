"""Running a sweep: each variant as its own `python -m builder train ... --out SWEEP/NAME`
subprocess, so a crash or a diverging run is recorded as failed (with its last output line) and
the sweep goes on; SIGINT/SIGTERM are forwarded once to the running children. Torch is not
imported here (the children import it)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from builder.lang.files import open_append
from builder.tools.sweep_plan import Plan, Variant, expand, new_record, train_namespace, validate_variants
from builder.tools.sweep_record import run_state, write_record
from training.flags import RUN_FLAGS
from training.runfiles import LOG

Log = Callable[[str], None]
# 128 + SIGINT or SIGTERM: the trainer checkpointed and stopped; killed by one of them (before the trainer
# handles signals, or after it is done): whatever checkpoint there is stands.
INTERRUPTED = (130, 143, -signal.SIGINT, -signal.SIGTERM)


def train_command(ns: argparse.Namespace, run_dir: Path, resume: bool) -> list[str]:
    """`python -m builder train ...` for a namespace from train_namespace."""
    words = [sys.executable, "-m", "builder", "train", ns.spec]
    for override in ns.overrides:
        words += ["--set", override]
    for flag in RUN_FLAGS:
        if getattr(ns, flag.dest) is not None:
            words += [flag.name, str(getattr(ns, flag.dest))]
    return [*words, "--resume" if resume else "--out", str(run_dir), "--quiet"]


@dataclass
class Outcome:
    status: Literal["done", "failed", "interrupted", "pruned", "skipped"]
    code: int = 0
    reason: str = ""


class Children:
    """The running `train` subprocesses; a stop request is forwarded to each exactly once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen[str]] = set()
        self.stopping = False

    def stop(self, signum: int = signal.SIGINT, frame: FrameType | None = None) -> None:
        with self.lock:
            self.stopping = True
        self.interrupt()

    def interrupt(self) -> None:
        """SIGINT to every running child: the trainer finishes its step, checkpoints and exits 130."""
        with self.lock:
            for proc in self.procs:
                proc.send_signal(signal.SIGINT)

    def run(self, command: list[str], log_path: Path, env: dict[str, str], on_line: Callable[[str], None]) -> Outcome:
        """Run one child, its output appended to log_path; the last line is the reason of a failure."""
        last = ""
        with open_append(log_path) as log, self._started(command, env) as proc:
            if proc is None:
                return Outcome("interrupted", 130, "not started: the sweep was stopping")
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                last = line.strip() or last
                on_line(line)
            code = proc.wait()
        if code == 0:
            return Outcome("done")
        return Outcome("interrupted" if code in INTERRUPTED else "failed", code, last or f"exit status {code}")

    @contextmanager
    def _started(self, command: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str] | None]:
        with self.lock:
            if self.stopping:
                yield None
                return
            # Own session: a Ctrl-C at the terminal reaches the sweep only, which forwards it once.
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                    start_new_session=True)
            self.procs.add(proc)
        try:
            yield proc
        finally:
            with self.lock:
                self.procs.discard(proc)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def child_env(jobs: int) -> dict[str, str]:
    """The children run this package (whatever the working directory), each on its share of the CPUs."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    if jobs > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = str(max(1, cpus // jobs))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


@contextmanager
def forwarding_signals(children: Children) -> Iterator[None]:
    """SIGINT/SIGTERM stop launching variants and are passed on to the running ones (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, children.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run_variant(plan: Plan, v: Variant, epochs: int, children: Children, env: dict[str, str], log: Log) -> Outcome:
    """Train one variant in its run directory (new, resumed or skipped) and record how it ended."""
    run_dir = plan.out / v.name
    state = run_state(run_dir, epochs)
    if state == "done":
        log(f"{v.name}: finished before, skipped")
        return Outcome("skipped")
    run_dir.mkdir(parents=True, exist_ok=True)
    ns = train_namespace(plan, v)
    command = train_command(ns, run_dir, resume=state == "resume")
    record = new_record(plan, v, command=command[1:])
    write_record(run_dir, record)
    log(f"{v.name}: {'resuming' if state == 'resume' else 'training'}")
    started = time.perf_counter()
    outcome = children.run(command, run_dir / LOG, env, lambda line: None)
    record.update(status=outcome.status, exit_code=outcome.code, reason=outcome.reason,
                  wall_seconds=round(time.perf_counter() - started, 3))
    write_record(run_dir, record)
    log(f"{v.name}: {outcome.status}" + (f": {outcome.reason}" if outcome.reason else ""))
    return outcome


def run_grid(plan: Plan, log: Log) -> int:
    """Validate every variant, run them J at a time, write the leaderboard. Exit 0, 1 (failures) or 130."""
    variants = expand(plan)
    epochs = validate_variants(plan, variants)
    plan.out.mkdir(parents=True, exist_ok=True)
    log(f"sweep of {len(variants)} variants into {plan.out}, {plan.jobs} at a time")
    children, env = Children(), child_env(plan.jobs)
    with forwarding_signals(children), ThreadPoolExecutor(plan.jobs) as pool:
        futures: set[Future[Outcome]] = {
            pool.submit(run_variant, plan, v, epochs[v.name], children, env, log) for v in variants
        }
        outcomes = _wait_all(futures)
    return finish(plan.out, outcomes, children.stopping, log)


def _wait_all(futures: set[Future[Outcome]]) -> list[Outcome]:
    pending, done = futures, set()
    while pending:  # short waits, so a signal handler runs promptly
        finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        done |= finished
    return [f.result() for f in done]


def finish(out: Path, outcomes: list[Outcome], stopped: bool, log: Log) -> int:
    """Print the leaderboard and how many variants ended which way; the exit status."""
    from builder.tools.leaderboard import write_leaderboard  # matplotlib, when a sweep ends

    board = write_leaderboard(out)
    log(board.markdown.rstrip())
    for line in board.problems:
        log(line)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "pruned", "failed", "interrupted")}
    log(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; leaderboard in {board.csv_path}")
    if stopped or counts["interrupted"]:
        log("interrupted: run the same command again to resume (finished variants are skipped)")
        return 130
    return 1 if counts["failed"] else 0
