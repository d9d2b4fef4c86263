"""What the property-based fuzzer (``tests/test_fuzz.py``) shares: its Hypothesis profiles, the one property every
generated case must satisfy, and the strategies for numbers over their whole range and beyond.

The property, for every case: the command exits 0 with a correct result, or exits 2 with exactly one line on
stderr (``losstune CMD: error: …``), no traceback, no warning (Python's, or a logged one), and every file that
existed before is byte-for-byte unchanged, with no stray file (a temporary file, a partial output) left beside
them.

Profiles: ``ci`` (the default) is derandomized (the same examples on every run) with a small example budget, so
the fuzzer's share of CI stays well under two minutes; ``long`` (``LOSSTUNE_FUZZ_PROFILE=long``) draws many
more, randomly, for a local hunt.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from search.cli import EXIT_BAD_INPUT, main

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
BIG_FILE = 64 * 2**20
PROFILE = os.environ.get("LOSSTUNE_FUZZ_PROFILE", "ci")


def fuzz_settings(ci_examples: int) -> settings:
    """The selected profile, with ``ci_examples`` examples under ``ci`` (each test sizes its own share)."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=ci_examples) if PROFILE == "ci" else base


def snapshot(*roots: Path) -> dict[str, object]:
    """Every entry under ``roots``: a regular file's bytes, else its kind."""
    out: dict[str, object] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if "__pycache__" in path.parts:  # written by Python when MLflow imports a model's code
                continue
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_size > BIG_FILE:  # a huge (sparse) file: its size and time
                out[str(path)] = ("big", info.st_size, info.st_mtime_ns)
            else:
                out[str(path)] = path.read_bytes() if stat.S_ISREG(info.st_mode) else stat.S_IFMT(info.st_mode)
    return out


@dataclass
class Outcome:
    rc: int
    out: str
    err: str


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_cli(argv: list[str], roots: list[Path], new_outputs: tuple[Path, ...] = ()) -> Outcome:
    """Run ``losstune ARGV`` in this process and check the property. ``new_outputs`` are the files (or
    directories, standing for everything under them) the command may create or replace when it succeeds;
    everything else under ``roots`` must stay as it was."""
    before = snapshot(*roots)
    handler = _Records()
    root_logger = logging.getLogger()
    root_logger.addHandler(handler)
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), redirect_stderr(err):
            warnings.simplefilter("always")
            try:
                rc = main(argv)
            except SystemExit as exc:  # a usage error (argparse): its exit status
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        root_logger.removeHandler(handler)
    outcome = Outcome(rc, out.getvalue(), err.getvalue())
    if currently_in_test_context():  # --hypothesis-show-statistics: how many cases reached a result
        event(f"{argv[0]}: exit {rc}")
    after = snapshot(*roots)
    shown = f"argv={argv}\nstdout={outcome.out[-2000:]}\nstderr={outcome.err[-2000:]}"
    assert rc in (0, EXIT_BAD_INPUT), shown
    assert "Traceback" not in outcome.err, shown
    if rc == EXIT_BAD_INPUT:
        assert outcome.err.count("\n") == 1 and outcome.err.startswith(f"losstune {argv[0]}: error: "), shown
        assert after == before, shown
        shown_warnings = [w for w in caught if not issubclass(w.category, DeprecationWarning)]  # hidden by default
        assert not shown_warnings, [str(w.message) for w in shown_warnings]
        assert not handler.records, [r.getMessage() for r in handler.records]
    else:
        names = [str(p) for p in new_outputs]

        def allowed(path: str) -> bool:
            return any(path == a or path.startswith(a + os.sep) for a in names)

        for path, content in before.items():
            assert allowed(path) or after.get(path) == content, f"{path} changed\n{shown}"
        stray = [p for p in after if p not in before and not allowed(p)]
        assert not stray, f"stray files {stray}\n{shown}"
        numeric = [w for w in caught if issubclass(w.category, RuntimeWarning) or "numpy" in w.filename]
        assert not numeric, [str(w.message) for w in numeric]
    return outcome


def valid_or_wide(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A field's valid values half of the time (so that cases get past validation and exercise what follows),
    else any number (:func:`wide_numbers`)."""
    return st.one_of(valid, wide_numbers())


def wide_numbers() -> st.SearchStrategy:
    """Any number a YAML file or a command line can hold: huge, negative, tiny, inf, NaN, and the edges that
    code downstream has limits at (2**31, 2**32, 2**63, float32's and float64's maxima)."""
    edges = [0, 1, -1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, 10**400, 3.5e38, 1e200, 1e-320, -0.0, 0.5]
    return st.one_of(
        st.sampled_from(edges),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True),
    )
