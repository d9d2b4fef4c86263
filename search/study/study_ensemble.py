"""The week's trials as one model: ensemble selection over the stored OOF probabilities of the study's complete
trials on its own splits (:mod:`objectives.ensemble`), with a selection-corrected estimate and verdict
(:mod:`objectives.selection_bias`), as one row beside the trials.

Computed at the end of ``losstune search`` (never while it trains) and kept in ``<study>.oof/ensemble.json``;
``status``, ``export --by ensemble`` and the parent run read that file while the trials it was made from are
still the study's, and recompute it (seconds) when a trial has been added since.

Which numbers mean what:

- ``oof_score`` ± ``oof_se``: the ensemble's OOF score at its own threshold (optimistic: weights and threshold
  were chosen on these rows), like a trial's ``cv_score``;
- ``honest_score`` ± ``honest_se``: nested cross-fitting, fold k scored by the ensemble selected without it;
- ``estimate`` (``estimate_low``..``estimate_high``): BBC-CV of the ensemble-selection procedure, the score to
  quote for unseen data; ``single_estimate``: the same for "the best single trial", and ``naive_best`` the
  uncorrected best OOF score of the N, for comparison;
- ``diff_vs_reference`` ± ``diff_vs_reference_se``: paired OOF difference from the reference (fold scores,
  corrected t-test), and ``verdict_vs_reference`` the selection-corrected verdict: BBC-CV's out-of-bag difference
  (its 2.5 % percentile above 0: better);
- ``diff_vs_best`` ± ``diff_vs_best_se``, ``verdict_vs_best``: against the best single trial, on honest fold
  scores (the ensemble's nested, the trial's cross-fitted).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from objectives.config import MetricConfig
from objectives.errors import LosstuneError
from search.formats.atomic_write import write_text_atomic
from search.study.oof_store import load_oof_set, oof_dir, oof_path
from search.study.steps import PlanTrial, config_key

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from search.study.study_file import StudyFile

CACHE = "ensemble.json"
ENSEMBLE_STATE = "ENSEMBLE"  # the state of its row in the results table: no trial, not counted as one
BOOTSTRAPS = 50  # BBC-CV's bootstraps: Monte Carlo error about a seventh of the out-of-bag spread; seconds to run
VERSION = 1


@dataclass(frozen=True)
class StudyEnsemble:
    trials: list[int]  # the members (trials with a weight), ascending
    weights: list[float]
    pool: list[int]  # the trials it was selected from
    key: str  # their pairing key (splits and data)
    threshold: float
    metric: str
    oof_score: float
    oof_se: float
    honest_score: float
    honest_se: float
    estimate: float
    estimate_low: float
    estimate_high: float
    estimate_mc_se: float
    single_estimate: float
    naive_best: float
    bootstraps: int
    reference_trial: int | None
    diff_vs_reference: float | None
    diff_vs_reference_se: float | None
    verdict_vs_reference: str | None
    best_trial: int
    diff_vs_best: float
    diff_vs_best_se: float
    verdict_vs_best: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def members_text(self) -> str:
        return " ".join(f"t{t}:{w:.2f}" for t, w in zip(self.trials, self.weights))


def _pool(records: list[PlanTrial], directory: Path) -> tuple[list[PlanTrial], str | None]:
    """The complete trials on the study's own splits that have an OOF file, and the pairing key of the latest."""
    on_study = [r for r in records if r.scored and r.cv is None]
    latest = max((r for r in on_study if read_key(directory, r.number)), key=lambda r: r.number, default=None)
    return on_study, None if latest is None else read_key(directory, latest.number)


def read_key(directory: Path, trial: int) -> str | None:
    path = oof_path(directory, trial)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:  # the archive is read lazily: the small meta entry only
        return str(json.loads(str(z["meta"]))["key"])


def compute(records: list[PlanTrial], file: StudyFile, metric: MetricConfig) -> StudyEnsemble | None:
    """Select the ensemble and its estimates from the stored OOF files; None with fewer than two trials."""
    from objectives.ensemble import select_ensemble
    from objectives.selection_bias import bbc_cv

    start = time.perf_counter()
    directory = oof_dir(file.base_dir, file.name)
    on_study, key = _pool(records, directory)
    oof = None if key is None else load_oof_set(directory, on_study, key)
    if oof is None or len(oof.trials) < 2:
        return None
    ref_key = config_key(file.reference_loss)
    losses = {r.number: r.loss for r in on_study}
    ref = next((i for i, t in enumerate(oof.trials) if config_key(losses[t]) == ref_key), None)
    chosen = select_ensemble(oof.proba, oof.y, oof.fold, metric, reference=ref)
    bbc = bbc_cv(oof.proba, oof.y, metric, reference=ref, bootstraps=BOOTSTRAPS, seed=0)
    ens = bbc.ensemble
    assert ens is not None  # asked for with_ensemble (the default)
    vs_ref = chosen.vs_reference
    return StudyEnsemble(
        trials=[oof.trials[i] for i in chosen.members],
        weights=[chosen.weights[i] for i in chosen.members],
        pool=list(oof.trials),
        key=oof.key,
        threshold=chosen.threshold,
        metric=metric.label,
        oof_score=chosen.oof_score,
        oof_se=chosen.oof_se,
        honest_score=chosen.honest_score,
        honest_se=chosen.honest_se,
        estimate=ens.estimate,
        estimate_low=ens.low,
        estimate_high=ens.high,
        estimate_mc_se=ens.mc_se,
        single_estimate=bbc.best_single.estimate,
        naive_best=bbc.naive_best,
        bootstraps=ens.bootstraps,
        reference_trial=None if ref is None else oof.trials[ref],
        diff_vs_reference=None if vs_ref is None else vs_ref.diff,
        diff_vs_reference_se=None if vs_ref is None else vs_ref.se,
        verdict_vs_reference=ens.verdict,
        best_trial=oof.trials[chosen.best_single],
        diff_vs_best=chosen.vs_best_honest.diff,
        diff_vs_best_se=chosen.vs_best_honest.se,
        verdict_vs_best=chosen.vs_best_honest.verdict,
        seconds=time.perf_counter() - start,
    )


def study_ensemble(
    records: list[PlanTrial], file: StudyFile, refresh: bool = False, compute_stale: bool = True
) -> StudyEnsemble | None:
    """The study's ensemble: the kept one while it was made from the trials the study now has (same pool, same
    splits), else computed now and kept (``refresh``: always computed; ``compute_stale`` False: None instead,
    nothing computed or written)."""
    metric = file.trial_config().metric
    directory = oof_dir(file.base_dir, file.name)
    cache = directory / CACHE
    on_study, key = _pool(records, directory)
    pool = sorted(r.number for r in on_study if read_key(directory, r.number) == key)
    made_for = {"version": VERSION, "reference": config_key(file.reference_loss), "metric": metric.label}
    if not refresh and cache.is_file():
        kept = json.loads(cache.read_text())
        same = all(kept.get(k) == v for k, v in made_for.items())
        if same and kept["ensemble"]["pool"] == pool and kept["ensemble"]["key"] == key:
            return StudyEnsemble(**kept["ensemble"])
    if not compute_stale:
        return None
    found = compute(records, file, metric)
    if found is not None:
        try:
            write_text_atomic(cache, json.dumps({**made_for, "ensemble": found.to_dict()}, indent=1))
        except LosstuneError as exc:
            # the file is a cache: a study directory this user may only read (a teammate's, a read-only mount)
            # still gets its answer, and is told why the next one will take seconds again
            log.warning("the week's ensemble is not kept (%s): it is computed again next time", exc)
    return found


def ensemble_row(e: StudyEnsemble) -> dict[str, Any]:
    """The ensemble as a row of the results table (:data:`search.study.results.COLUMNS`): its scores where a
    trial has them, the members and the selection-corrected estimate in ``memo``."""
    from search.study.loss_params import LOSS_PARAMS

    return {
        "trial": "ensemble",
        "phase": "ensemble",
        **{k: "" for k in LOSS_PARAMS},
        "cv_score": e.oof_score,
        "honest_score": e.honest_score,
        "threshold": e.threshold,
        "state": ENSEMBLE_STATE,
        "week": None,
        "memo": f"{e.members_text()}; estimate {e.estimate:.4f} (BBC-CV)",
        "cv_score_se": e.oof_se,
        "honest_score_se": e.honest_se,
        "repeats": None,
        "cv_seed": None,
        "diff_vs_reference": e.diff_vs_reference,
        "diff_vs_reference_se": e.diff_vs_reference_se,
        "verdict_vs_reference": e.verdict_vs_reference,
        "reference_trial": e.reference_trial,
        "diff_vs_best": e.diff_vs_best,
        "diff_vs_best_se": e.diff_vs_best_se,
        "verdict_vs_best": e.verdict_vs_best,
        "best_trial": e.best_trial,
    }


def format_best_corrected(e: StudyEnsemble, best_trial: int) -> str | None:
    """The selection-corrected estimate of the study's best trial (BBC-CV of "pick the best single trial"), for
    the best trial's own lines: it is the figure the ensemble line compares with, and without it the best trial
    would show only its honest score, which is optimistic by that choice. None when the ensemble's best single
    trial is another (the study chose its best by another rule)."""
    if e.best_trial != best_trial:
        return None
    return (
        f"corrected for choosing among {len(e.pool)} trials: {e.metric} {e.single_estimate:.4f} (BBC-CV of picking "
        "the best single trial; the ensemble line compares with it)"
    )


def format_ensemble(e: StudyEnsemble) -> list[str]:
    """Lines for the CLI (status, the end of a search)."""
    ref = (
        ""
        if e.diff_vs_reference is None
        else f"; vs reference t{e.reference_trial}: {e.diff_vs_reference:+.4f} ± {e.diff_vs_reference_se:.4f} (OOF), "
        f"{e.verdict_vs_reference} (selection-corrected, BBC-CV)"
    )
    return [
        f"ensemble of {len(e.trials)} of {len(e.pool)} trials ({e.members_text()}), threshold {e.threshold:.4f}: "
        f"{e.metric} {e.oof_score:.4f} ± {e.oof_se:.4f} (OOF), honest {e.honest_score:.4f} ± {e.honest_se:.4f} "
        f"(nested: chosen again without each fold){ref}",
        f"  estimate for unseen data: {e.metric} {e.estimate:.4f} ({e.estimate_low:.4f} to {e.estimate_high:.4f}; "
        f"BBC-CV over {e.bootstraps} bootstraps, corrected for choosing among {len(e.pool)} trials); the best "
        f"single trial t{e.best_trial}: {e.single_estimate:.4f} by the same estimator, {e.naive_best:.4f} uncorrected; "
        f"ensemble vs it: {e.diff_vs_best:+.4f} ± {e.diff_vs_best_se:.4f} (honest), {e.verdict_vs_best}",
    ]
