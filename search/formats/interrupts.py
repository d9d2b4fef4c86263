"""The one place losstune rewires its signals: Ctrl-C (SIGINT) and ``kill PID`` (SIGTERM) as one stop request
that cannot be lost, the guard under which a block that must run to its end holds them, and SIGTERM as an
interrupt around a file write.

* :func:`stop_signals_as_interrupt` (a search in this process) and :func:`worker_process_signals` (a process of
  ``--workers N``): a stop signal raises ``KeyboardInterrupt``, so the trials in training are marked and nothing
  is left RUNNING.
* :func:`stop_signals_held`: for a block that must run to its end (a batch's trials being recorded or marked
  FAIL, a stopping search forwarding the stop to its workers and printing what it did), a stop signal is only
  remembered; it is raised by the next :func:`raise_if_stop_requested`, after the block.

Python delivers a signal by raising in whatever bytecode runs next in the main thread. When that is a weakref or
garbage-collector callback (SQLAlchemy registers some), the interpreter prints "Exception ignored in ..." and the
``KeyboardInterrupt`` is gone: the search would train on and exit 0. So the handler also records the request, and
the worker looks at it between steps (:func:`raise_if_stop_requested`): a stop is acted on at the latest when the
current training ends, never dropped.

* :func:`sigterm_interrupts`: for a command that runs no search (``predict``, ``export``, ...), SIGTERM raises
  ``KeyboardInterrupt`` while a file is written, so that :mod:`search.formats.atomic_write` removes its temporary
  entry; inside a search, whose handler is already installed, it changes nothing.

It sits in ``search.formats`` (the process's edges: exit statuses, signals) so that the atomic writer, below the
search, uses it too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_requested: int | None = None  # the signal number of a stop not yet acted on


def _interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    global _requested
    _requested = signum
    raise KeyboardInterrupt(f"signal {signum}")


def _raise_only(signum: int, _frame: FrameType | None) -> NoReturn:
    """A write's SIGTERM: raised for its cleanup, not remembered as a search's stop request (no search runs)."""
    raise KeyboardInterrupt(f"signal {signum}")


def _remember(signum: int, _frame: FrameType | None) -> None:
    global _requested
    _requested = signum


def worker_process_signals() -> None:
    """For a worker process of ``--workers N``, which never gives them back: SIGTERM stops it as an interrupt;
    Ctrl-C is ignored, since in a terminal it reaches the whole process group and the parent forwards it once,
    as SIGTERM (a second signal cannot then interrupt a worker while it marks its trials)."""
    global _requested
    _requested = None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _interrupt)


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
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        _requested = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """The block runs to its end: a Ctrl-C or SIGTERM that arrives meanwhile is remembered, not raised, and the
    next :func:`raise_if_stop_requested` raises it. A signal ignored before stays ignored. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(sig, _remember)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(sig, handler)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` for the duration (Ctrl-C already does), so that a ``finally`` runs; a
    handler already installed (a search's) is kept. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return
    signal.signal(signal.SIGTERM, _raise_only)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def raise_if_stop_requested() -> None:
    """Raise the ``KeyboardInterrupt`` of a stop signal whose own raise was swallowed (see the module's doc) or
    held (:func:`stop_signals_held`)."""
    global _requested
    if _requested is not None:
        signum, _requested = _requested, None
        raise KeyboardInterrupt(f"signal {signum}")
