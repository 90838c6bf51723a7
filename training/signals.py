"""Stop signals (SIGINT, SIGTERM, SIGHUP). During training: finish the step, checkpoint, stop;
a second signal stops at once (`on_second` says how). During start-up: stop at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
Handler = Callable[[int, FrameType | None], object]


class StopFlag:
    """Records the first stop signal; the loop stops after the current step. A second one calls
    `on_second(signum)`, which raises (it stops at once, saying what is left)."""

    def __init__(self, on_second: Callable[[int], BaseException] | None = None) -> None:
        self.signal: int | None = None
        self.on_second = on_second

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise self.on_second(signum) if self.on_second else KeyboardInterrupt
        self.signal = signum


@contextmanager
def handling(handler: Handler) -> Iterator[None]:
    """Route the stop signals to `handler` (main thread only), then restore the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextmanager
def stop_on_signals(on_second: Callable[[int], BaseException] | None = None) -> Iterator[StopFlag]:
    """A StopFlag that receives the stop signals while training."""
    flag = StopFlag(on_second)
    with handling(flag):
        yield flag


def stop_at_once(make: Callable[[int], BaseException]) -> Handler:
    """A handler that raises make(signum): for start-up, where there is nothing to checkpoint."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise make(signum)

    return handler
