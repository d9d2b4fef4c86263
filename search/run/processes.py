"""The processes of ``losstune search --workers N``: started, waited for, and stopped on Ctrl-C (forwarded once to
each worker as SIGTERM, which a worker takes as the same clean stop: its trials are marked, nothing is left RUNNING;
the signal set-up is :mod:`search.formats.interrupts`)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sys
from pathlib import Path

from objectives.errors import LosstuneError
from search.formats.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from search.formats.interrupts import stop_signals_held, worker_process_signals
from search.formats.redaction import install_log_redaction, redact_text
from search.run.options import SearchOptions
from search.run.session import StudySession
from search.run.storage import storage_fault

WORKER_STOP_SECONDS = 120.0  # after Ctrl-C, how long a worker process may take to mark its trial


def _share_cores(workers: int) -> None:
    """Give each of ``workers`` processes its share of this machine's cores for torch's intra-op threads: left
    alone, every worker starts one thread per core, and spinning threads on oversubscribed cores slow all workers
    several times over. An explicit ``OMP_NUM_THREADS`` is respected."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _worker_process(study_path: str, options: SearchOptions, week: str, parent_run_id: str) -> None:
    worker_process_signals()  # SIGTERM stops it cleanly; Ctrl-C reaches it from the parent, once, as SIGTERM
    _share_cores(options.workers)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    install_log_redaction()
    from search.run.trial_outcome import format_outcome
    from search.run.worker import Worker

    try:
        session = StudySession(Path(study_path), allow_data_change=options.allow_data_change)
        worker = Worker(session, options, week, parent_run_id, echo=print)
        metric = session.file.trial_config().metric.label
        worker.run(on_trial=lambda o: print(format_outcome(o, metric), flush=True))
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except LosstuneError as exc:
        print(f"losstune search: error: {redact_text(str(exc))}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as exc:
        fault = storage_fault(exc)
        if fault is None:
            raise
        print(f"losstune search: error: {redact_text(str(fault))}", file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)


def run_workers(study_path: Path, options: SearchOptions, week: str, parent: str, worker_ids: set[str]) -> None:
    """``options.workers`` worker processes under the parent run, waited for; their ids added to ``worker_ids``.
    Ctrl-C is forwarded to them once, as SIGTERM; a worker stopped that way is reported as an interrupt, one that
    failed as a :class:`LosstuneError`."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_process, args=(str(study_path), options, week, parent), name=f"losstune-worker-{i}")
        for i in range(options.workers)
    ]
    for p in procs:
        p.start()
        worker_ids.add(f"{socket.gethostname()}:{p.pid}")
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        with stop_signals_held():
            for p in procs:
                if p.is_alive():
                    p.terminate()  # SIGTERM: each marks its current trial, then stops
            for p in procs:
                p.join(WORKER_STOP_SECONDS)
                if p.is_alive():  # stuck: its trial goes stale and is failed by the next run
                    p.kill()
        raise
    codes = {p.name: p.exitcode for p in procs}
    if any(code == EXIT_INTERRUPTED for code in codes.values()):
        raise KeyboardInterrupt  # a worker was stopped (kill -TERM): report like Ctrl-C
    failed = [name for name, code in codes.items() if code != 0]
    if failed:
        raise LosstuneError(f"worker process(es) {', '.join(failed)} stopped with an error (see their output above)")
