"""Ctrl-C (SIGINT) and ``kill PID`` (SIGTERM) as one stop request that cannot be lost.

Python delivers a signal by raising in whatever bytecode runs next in the main thread. When that is a weakref or
garbage-collector callback (SQLAlchemy registers some), the interpreter prints "Exception ignored in ..." and the
``KeyboardInterrupt`` is gone: the search would train on and exit 0. So the handler also records the request, and
the worker looks at it between steps (:func:`raise_if_stop_requested`): a stop is acted on at the latest when the
current training ends, never dropped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

_requested: int | None = None  # the signal number of a stop not yet acted on


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    global _requested
    _requested = signum
    raise KeyboardInterrupt(f"signal {signum}")


def install_stop_handlers(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
    """For a process that never gives them back (a worker process): ``signals`` stop it as an interrupt."""
    global _requested
    _requested = None
    for sig in signals:
        signal.signal(sig, _interrupt)


@contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """Ctrl-C and ``kill PID`` stop the block as a ``KeyboardInterrupt`` (the current trials are marked, nothing
    is left RUNNING), and are remembered until acted on. Main thread only: elsewhere signals can be neither
    changed nor delivered."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = None
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        _requested = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_if_stop_requested() -> None:
    """Raise the ``KeyboardInterrupt`` of a stop signal whose own raise was swallowed (see the module's doc)."""
    global _requested
    if _requested is not None:
        signum, _requested = _requested, None
        raise KeyboardInterrupt(f"signal {signum}")
