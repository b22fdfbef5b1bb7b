"""What a training run does on a stop (SIGTERM or Ctrl-C, flagged by `ctslice.stopping.stop_signals`): the loop
finishes its current step, the run writes a resumable checkpoint at that step and exits non-zero.

    with stop_signals() as stop:
        ...  if stop.requested: raise StopTraining  ...   # checked after every optimizer step

A stop sent to the whole process group (`timeout`, shells, a batch scheduler's job-step signal) also reaches the
DataLoader workers, which die of it. A loader that finds its workers gone after a stop raises StopTraining
instead (`loader_stopped`): the run saves at its last completed step.
"""

from __future__ import annotations

import signal

from ..errors import CtsliceError
from ..stopping import active_stop


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


def loader_stopped(error: BaseException) -> bool:
    """Is `error`, raised while reading a batch, a loader whose workers died of the stop this run received (a
    signal to the whole process group)? Then the run stops as for the signal itself, at its last completed step."""
    stop = active_stop()
    return (stop is not None and stop.requested is not None and isinstance(error, RuntimeError)
            and "DataLoader worker" in str(error))
