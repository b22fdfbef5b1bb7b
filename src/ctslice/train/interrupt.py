"""Stopping cleanly on SIGTERM (what schedulers send before preemption) or Ctrl-C: the signal only sets a flag,
the loop finishes its current step, the run writes a resumable checkpoint at that step and exits non-zero.

    with stop_signals() as stop:
        ...  if stop.requested: raise StopTraining  ...   # checked after every optimizer step

A second Ctrl-C while the checkpoint is written interrupts at once (KeyboardInterrupt), as users expect.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import CtsliceError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(worker_init, worker_id: int) -> None:
    """DataLoader worker start (bind with functools.partial): workers ignore SIGINT, which a terminal's Ctrl-C sends
    to the whole process group, so they keep feeding the step the main process finishes (a worker killed by it
    would abort that step). Not SIGTERM: multiprocessing stops leftover workers at exit with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if worker_init is not None:
        worker_init(worker_id)


class StopTraining(Exception):
    """Raised by the loop after the step during which a stop was requested; the state says where it stopped."""


class TrainingInterrupted(CtsliceError):
    """The run stopped on a signal after writing a resumable checkpoint; the message says how to resume."""


class StopFlag:
    requested: str | None = None
    """The name of the first signal received (None: keep training)."""


@contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[StopFlag]:
    """SIGINT and SIGTERM (or `signals`) set the flag while the block runs (only the main thread can install
    handlers; elsewhere, e.g. a library call from a thread, the flag just stays unset)."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
