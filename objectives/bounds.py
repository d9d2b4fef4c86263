"""Every number a user gives losstune, bounded once: the range the code downstream can actually take.

Each field of a study file, an exported configuration, a command-line option and an environment variable that
holds a number is declared with one of these types (pydantic ``Annotated`` constraints), so a value out of range
is refused where it enters, with a line naming the field and the range, instead of reaching NumPy, scikit-learn,
torch, SQLite or a thread's timer as a traceback. No float here accepts NaN or infinity (``allow_inf_nan=False``).

The bounds and why:

- CV seed: scikit-learn's splitter and NumPy take ``[0, 2**32 - 1]``. A study's own seed is at most
  :data:`STUDY_SEED_MAX` (``2**31 - 1``) so that a confirm phase's fresh seeds (blocks of 1000 above every seed
  used, :func:`search.study.plan.fresh_seed`) stay in the splitter's range for two million confirm phases.
- Loss weights at most 1e6, gamma at most 100: the loss stays finite in float32 for any probability the
  network can give (BCE is clamped at about 100 per row).
- ``beta`` of F-beta in ``(0, 1000]``: ``beta**2`` stays far from overflow, and beyond it F-beta is recall.
- Learning rate and weight decay: any positive finite float (a rate that makes the loss diverge is a trial
  outcome, ``failure=diverged``, not bad input).
- Seconds (heartbeat, grace, ``--timeout``): at most a week; ``threading.Event.wait`` overflows near 1e10.
- Counts (budget, trials of a phase, a trial number, workers): what a SQLite or PostgreSQL integer column and
  the machine can hold, far above any real use.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

from objectives.errors import LosstuneError

SEED_MAX = 2**32 - 1
STUDY_SEED_MAX = 2**31 - 1
WEEK_SECONDS = 7 * 24 * 3600.0

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Gamma = Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
LossWeight = Annotated[float, Field(ge=0.0, le=1e6, allow_inf_nan=False)]
Beta = Annotated[float, Field(gt=0.0, le=1000.0, allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegativeFinite = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
HiddenSize = Annotated[int, Field(ge=1, le=65536)]
Epochs = Annotated[int, Field(ge=1, le=100_000)]
EmbeddingBins = Annotated[int, Field(ge=2, le=256)]
BatchSize = Annotated[int, Field(ge=1, le=1 << 24)]
Folds = Annotated[int, Field(ge=2, le=100)]
Repeats = Annotated[int, Field(ge=1, le=100)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Budget = Annotated[int, Field(ge=0, le=100_000)]
PhaseTrials = Annotated[int, Field(ge=1, le=100_000)]
TrialNumber = Annotated[int, Field(ge=0, le=2**31 - 1)]
Workers = Annotated[int, Field(ge=1, le=256)]
Seconds = Annotated[float, Field(gt=0.0, le=WEEK_SECONDS, allow_inf_nan=False)]

T = TypeVar("T")
_ADAPTERS: dict[Any, TypeAdapter] = {}


def parse_bounded(kind: Any, text: str, name: str) -> Any:
    """``text`` (a command-line or environment value) as ``kind``, or :class:`LosstuneError` naming ``name``
    and the range: the same types, and so the same bounds, as the study file's fields."""
    adapter = _ADAPTERS.setdefault(kind, TypeAdapter(kind))
    try:
        return adapter.validate_python(text.strip() if isinstance(text, str) else text)
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        raise LosstuneError(f"{name}: {msg} (got {str(text)[:40]!r})") from None
