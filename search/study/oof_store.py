"""Every finished trial's out-of-fold (OOF) probabilities, kept beside the study so that any later step (an
ensemble, a selection-corrected estimate) can re-score any set of trials without training.

One file per trial, ``<study dir>/<study name>.oof/t00007.npz`` (NumPy's compressed archive; the same file is
the ``oof/`` artifact of the trial's MLflow run), holding

- ``proba``: float32 ``[repeats, rows]``, every repeat's OOF probabilities (float32 keeps 7 digits, far finer
  than any threshold a score depends on; 10 trials of one repeat on 50,000 rows are about 2 MB on disk);
- ``fold``: int16 ``[repeats, rows]``, the fold each row was held out in, per repeat;
- ``y``: int8 ``[rows]``, the labels (0/1) the probabilities were scored against;
- ``meta``: JSON text: trial number, CV seed, folds, repeats, data fingerprint and the pairing key
  (:func:`search.study.steps.pairing_key`).

Only trials with the same pairing key (same CV seed, folds, repeats and data) are ever loaded together, and
their labels and fold assignments must agree row for row: otherwise :class:`OOFMismatch`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objectives.errors import LosstuneError
from search.formats.atomic_write import atomic_file
from search.study.steps import PlanTrial, pairing_key

SUFFIX = ".oof"


class OOFMismatch(LosstuneError):
    """Stored OOF predictions that cannot be paired: other rows, labels or folds."""


@dataclass(frozen=True)
class StoredOOF:
    """One trial's OOF probabilities as stored."""

    trial: int
    proba: np.ndarray  # float32 [repeats, rows]
    fold: np.ndarray  # int [repeats, rows]
    y: np.ndarray  # int8 [rows]
    key: str
    fingerprint: str | None


@dataclass(frozen=True)
class OOFSet:
    """Several trials' OOF probabilities on the same splits: ``proba[i]`` is trial ``trials[i]``'s."""

    trials: tuple[int, ...]
    proba: np.ndarray  # float32 [trials, repeats, rows]
    fold: np.ndarray  # [repeats, rows]
    y: np.ndarray  # [rows]
    key: str


def oof_dir(base_dir: Path, study_name: str) -> Path:
    """The study's OOF directory: beside the study file, named after the study."""
    return Path(base_dir) / f"{study_name}{SUFFIX}"


def oof_path(directory: Path, trial: int) -> Path:
    return Path(directory) / f"t{trial:05d}.npz"


def write_trial_oof(
    directory: Path, trial: int, proba: np.ndarray, fold: np.ndarray, y: np.ndarray, cv_seed: int, fingerprint: str
) -> Path:
    """Write one trial's file (atomically: a temporary file renamed over the final name, so that a reader or a
    crash never sees half a file). ``proba`` and ``fold`` are ``[repeats, rows]`` (or ``[rows]``)."""
    p = np.atleast_2d(np.asarray(proba, dtype=np.float32))
    f = np.atleast_2d(np.asarray(fold)).astype(np.int16)
    labels = np.asarray(y).astype(np.int8)
    if p.shape != f.shape or p.shape[1] != labels.shape[0]:
        raise ValueError(f"OOF shapes disagree: proba {p.shape}, fold {f.shape}, y {labels.shape}")
    repeats, folds = p.shape[0], int(f.max()) + 1
    meta = {
        "trial": trial,
        "cv_seed": cv_seed,
        "folds": folds,
        "repeats": repeats,
        "fingerprint": fingerprint,
        "key": pairing_key(cv_seed, folds, repeats, fingerprint),
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = oof_path(directory, trial)
    with atomic_file(final, encoding=None) as out:
        np.savez_compressed(out, proba=p, fold=f, y=labels, meta=np.array(json.dumps(meta)))
    return final


def read_trial_oof(path: Path) -> StoredOOF:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return StoredOOF(meta["trial"], z["proba"], z["fold"], z["y"], meta["key"], meta.get("fingerprint"))


def load_oof_set(directory: Path, records: Sequence[PlanTrial], key: str | None = None) -> OOFSet | None:
    """The OOF probabilities of the complete ``records`` on the splits ``key`` (default: those of the
    lowest-numbered complete trial that has a file), ordered by trial number; trials without a file (recorded
    before files were kept, or on another machine) are left out. None when no trial has one."""
    found = []
    for r in sorted((r for r in records if r.scored), key=lambda r: r.number):
        path = oof_path(directory, r.number)
        if not path.is_file():
            continue
        stored = read_trial_oof(path)
        if key is None:
            key = stored.key
        if stored.key == key and r.cv_key == key:
            found.append(stored)
    if not found:
        return None
    first = found[0]
    for s in found[1:]:
        if s.proba.shape != first.proba.shape or not np.array_equal(s.y, first.y):
            raise OOFMismatch(f"trial {s.trial}'s stored OOF rows or labels differ from trial {first.trial}'s")
        if not np.array_equal(s.fold, first.fold):
            raise OOFMismatch(f"trial {s.trial}'s stored folds differ from trial {first.trial}'s")
    return OOFSet(
        trials=tuple(s.trial for s in found),
        proba=np.stack([s.proba for s in found]),
        fold=first.fold,
        y=first.y,
        key=first.key,
    )
