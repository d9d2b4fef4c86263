"""What a study stores beside its trials, in one place: the study-level Optuna user attrs, read
(:func:`read_study`, validated: a value of the wrong type is one :class:`~objectives.errors.LosstuneError` line)
and written (:func:`write_study`) only here. The trial-level record is :mod:`search.study.trial_record`.

- ``losstune_study_format``: the layout the study's trials were written in (:mod:`search.run.storage`);
- ``mlflow_parent_run_id`` and ``mlflow_parent_open``: the study's MLflow parent run, and whether a search holds
  it RUNNING (:mod:`search.run.runner`, :mod:`search.run.session`);
- ``data_fingerprint`` and ``data_fingerprint_history``: the data the study runs on, and every earlier one when
  it changed under ``--allow-data-change``;
- ``baseline``: the study's yardstick record (:mod:`search.study.baseline_record`).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from objectives.errors import LosstuneError
from search.formats.validation import one_line

STUDY_FORMAT_ATTR = "losstune_study_format"
PARENT_OPEN_ATTR = "mlflow_parent_open"  # true while a search holds the study's MLflow parent run RUNNING


class OptunaStudy(Protocol):
    """What is read of and written to a study: Optuna's ``Study``."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...


class StoredStudy(BaseModel):
    """The study-level user attrs (module docstring); every one is absent from a new study."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    losstune_study_format: Any = None  # any value: an unknown format is refused by name (check_study_format)
    mlflow_parent_run_id: str | None = None
    mlflow_parent_open: bool = False
    data_fingerprint: str | None = None
    data_fingerprint_history: tuple[str, ...] | None = None
    baseline: dict[str, Any] | None = None  # objectives.baseline.BaselineResult.record() with its ``key``


def read_study(study: OptunaStudy) -> StoredStudy:
    try:
        return StoredStudy.model_validate(study.user_attrs)
    except ValidationError as exc:
        raise LosstuneError(f"the study's stored {one_line(exc, '').removeprefix('.')}") from None


def study_format(study: OptunaStudy) -> object:
    """The study's format as stored, read alone: checked before anything else of the study is read."""
    return study.user_attrs.get(STUDY_FORMAT_ATTR)


def write_study(study: OptunaStudy, **fields: Any) -> None:
    """Store ``fields`` (names of :class:`StoredStudy`), each as its study user attr, validated first, in the
    order given: a caller that writes a history before the value it records relies on it (a crash between the two
    writes then repeats the change next run rather than losing it)."""
    unknown = sorted(set(fields) - set(StoredStudy.model_fields))
    if unknown:
        raise TypeError(f"StoredStudy has no field(s) {unknown}")
    dumped = StoredStudy.model_validate(fields).model_dump(mode="json", include=set(fields))
    for key in fields:
        study.set_user_attr(key, dumped[key])
