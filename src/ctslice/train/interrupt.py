"""Stopping cleanly on SIGTERM (what schedulers send before preemption) or Ctrl-C: the signal only sets a flag,
the loop finishes its current step, the run writes a resumable checkpoint at that step and exits non-zero.

    with stop_signals() as stop:
        ...  if stop.requested: raise StopTraining  ...   # checked after every optimizer step

A second Ctrl-C while the checkpoint is written interrupts at once (KeyboardInterrupt), as users expect.

A stop sent to the whole process group (`timeout`, shells, a batch scheduler's job-step signal) also reaches the
DataLoader workers, which die of it. Once a stop is requested, torch's SIGCHLD handler (which would raise "worker
killed by signal" in the middle of whatever runs, a step or the checkpoint write) is set aside, and a loader that
finds its workers gone raises StopTraining instead (`loader_stopped`): the run saves at its last completed step.
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
    """Raised by the loop after the step during which a stop was requested; the state says where it stopped.
    Its message, when it has one, says why (e.g. the loader's workers were stopped)."""


class TrainingInterrupted(CtsliceError):
    """The run stopped on a signal after writing a resumable checkpoint; the message says how to resume."""


class StopFlag:
    requested: str | None = None
    """The name of the first signal received (None: keep training)."""


_active: StopFlag | None = None  # the flag of the innermost stop_signals block (None outside one)


def loader_stopped(error: BaseException) -> bool:
    """Is `error`, raised while reading a batch, a loader whose workers died of the stop this run received (a
    signal to the whole process group)? Then the run stops as for the signal itself, at its last completed step."""
    return (_active is not None and _active.requested is not None and isinstance(error, RuntimeError)
            and "DataLoader worker" in str(error))


@contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[StopFlag]:
    """SIGINT and SIGTERM (or `signals`) set the flag while the block runs (only the main thread can install
    handlers; elsewhere, e.g. a library call from a thread, the flag just stays unset)."""
    global _active
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    sigchld: list = []

    def handler(signum, frame):
        if flag.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if flag.requested is None:
            # workers dying of the same (group) signal must not raise in the step or the checkpoint write; the
            # loader reports them where a batch is read (`loader_stopped`). SIG_DFL: ignored, children still reaped
            sigchld.append(signal.signal(signal.SIGCHLD, signal.SIG_DFL))
        flag.requested = signal.Signals(signum).name

    previous = {s: signal.signal(s, handler) for s in signals}
    outer, _active = _active, flag
    try:
        yield flag
    finally:
        _active = outer
        for s, h in previous.items():
            signal.signal(s, h)
        if sigchld and sigchld[0] is not None:
            signal.signal(signal.SIGCHLD, sigchld[0])
