"""Stopping cleanly on a signal: SIGINT (Ctrl-C) or SIGTERM (what schedulers send before preemption) only set a
flag, and the work in progress checks it where stopping is safe (training after a step, evaluation after a
subject).

    with stop_signals() as stop:
        ...  if stop.requested: ...   # the name of the first signal received, None until then

A second Ctrl-C interrupts at once (KeyboardInterrupt), as users expect. Once a stop is requested, torch's
SIGCHLD handler (which would raise "worker killed by signal" in the middle of whatever runs) is set aside:
children dying of the same signal sent to the whole process group are reported where their results are read
(training: `train/interrupt.loader_stopped`, which asks `active_stop()`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    requested: str | None = None
    """The name of the first signal received (None: keep going)."""


_active: StopFlag | None = None  # the flag of the innermost stop_signals block (None outside one)


def active_stop() -> StopFlag | None:
    """The flag of the innermost `stop_signals` block running now (None outside one)."""
    return _active


@contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = SIGNALS) -> Iterator[StopFlag]:
    """SIGINT and SIGTERM (or `signals`) set the flag while the block runs (only the main thread can install
    handlers; elsewhere, e.g. a library call from a thread, the flag just stays unset). The handlers before the
    block are restored after it."""
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
            # children dying of the same (group) signal must not raise in the middle of a step or a write; they
            # are reported where their results are read. SIG_DFL: ignored, children still reaped
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
