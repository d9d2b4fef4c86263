"""A stop signal that lands in a garbage-collector callback is not lost (the CI failure of a Ctrl-C test)."""

import gc
import os
import signal
import weakref

import pytest

from search.formats.interrupts import raise_if_stop_requested, stop_signals_as_interrupt


class _Node:
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed raise, on purpose
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_swallowed_by_a_weakref_callback_is_raised_at_the_next_check(sig):
    swallowed = []

    def callback(_ref):
        # the interpreter prints "Exception ignored in ..." for what a weakref callback raises: the interrupt the
        # signal handler raises here never reaches the search
        swallowed.append(True)
        os.kill(os.getpid(), sig)

    with stop_signals_as_interrupt():
        node = _Node()
        ref = weakref.ref(node, callback)
        del node
        gc.collect()
        assert swallowed and ref() is None  # the signal was delivered inside the callback, and ignored there
        with pytest.raises(KeyboardInterrupt):
            raise_if_stop_requested()
        raise_if_stop_requested()  # acted on once: the next check passes


def test_no_stop_request_outlives_its_block():
    with stop_signals_as_interrupt(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs at the next bytecode boundary
            pass
    raise_if_stop_requested()  # the block ended: a later search starts with no stop pending


def test_signals_are_rewired_in_one_module_only():
    """search/formats/interrupts.py is the one place losstune installs a signal handler."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    others = [
        p.relative_to(root).as_posix()
        for package in ("objectives", "search")
        for p in (root / package).rglob("*.py")
        if p.name != "interrupts.py" and ("signal.signal(" in p.read_text(encoding="utf-8"))
    ]
    assert others == []
