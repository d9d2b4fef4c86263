"""Recording finished trials off the training path: one background thread drains a queue of jobs.

The worker hands each trial over as soon as its training ends and goes on to train the next batch; this thread
writes the trial the way it has always been written (MLflow metrics and reports first, then Optuna's ``tell``,
then the run's FINISHED status), one trial after the other, in the order handed over. A job that fails marks its
own trial and keeps the exception; :meth:`Recorder.check` re-raises the first one in the worker's thread.
:meth:`Recorder.close` waits until every job handed over is done: a search that ends, is interrupted or stops on
an error has first recorded every trial that finished training.

Measured on the demo study (2 cores): a trial's reports and plots take 0.3 to 0.7 s, which the next batch's
training now overlaps; a process pool would have to pickle each result (the OOF arrays) and re-open the stores.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Recorder:
    """A single background thread running jobs in order; ``pending`` holds what the jobs will record."""

    def __init__(self, after_batch: Callable[[], None] | None = None) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._after_batch = after_batch  # run when the queue runs dry (the study's summary, once per batch)
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, object] = {}
        self._thread = threading.Thread(target=self._drain, name="losstune-recorder", daemon=True)
        self._thread.start()

    def submit(self, key: int, pending: object, job: Callable[[], None]) -> None:
        """Run ``job`` in the background; until it has run, :meth:`pending` includes ``key: pending``."""
        with self._lock:
            self._pending[key] = pending
        self._jobs.put((key, job))

    def pending(self) -> dict[int, object]:
        """A snapshot of what has been handed over and not yet recorded."""
        with self._lock:
            return dict(self._pending)

    def check(self) -> None:
        """Re-raise, in the caller's thread, the first error a job met."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for every job handed over, then stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _drain(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            key, job = item
            try:
                job()
            except BaseException as exc:
                if self._error is None:
                    self._error = exc  # raised in the worker's thread: the one line the user sees
                else:  # usually the same fault again (a full disk): -v shows it, the one line stays one
                    log.info("recording another trial failed too: %s: %s", type(exc).__name__, exc)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            with self._jobs.mutex:  # nothing more to do now (or only the end): the batch is written
                dry = not self._jobs.queue or self._jobs.queue[0] is None
            if dry and self._after_batch is not None:
                try:
                    self._after_batch()
                except Exception as exc:
                    if self._error is None:
                        self._error = exc
