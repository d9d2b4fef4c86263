"""A study opened for work: the study file, its data, the Optuna study, the budget ledger and MLflow.

Everything that can be checked without writing is checked before anything is written, and the pieces a dead
worker leaves behind (RUNNING trials without a heartbeat, RUNNING MLflow runs) are reconciled here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.data_spec import check_regular_file
from objectives.errors import LosstuneError
from search.run.budget import BudgetLedger
from search.run.heartbeats import adopt_silent_trials, fail_stale_trial, stale_trial_ids
from search.run.optuna_private import storage_engine
from search.run.storage import (
    init_lock,
    open_optuna_storage,
    open_study,
    quiet_optuna,
    redact,
    require_existing_study_file,
    study_exists,
)
from search.run.store_check import check_store, check_stores
from search.study.plan import distribution_bounds
from search.study.stored_config import check_trained_settings
from search.study.study_file import StudyFile, load_study_file
from search.study.study_record import read_study, write_study
from search.study.trial_record import read_trial
from search.tracking.mlflow_locations import check_tracking_reachable

# Only what every command needs is imported here. The data (pandas), the folds (torch, scikit-learn) and MLflow
# are imported where they are used, so that `losstune status` and a week whose budget is spent answer at once.
if TYPE_CHECKING:
    from collections.abc import Collection

    import optuna

    from objectives.data import Dataset
    from objectives.evaluate import PreparedFolds
    from search.tracking.tracker import StudyTracker

log = logging.getLogger(__name__)

STALE_REASON = "worker stopped without finishing the trial (no heartbeat): retried"
STALE_FAILURE = "stale"  # the ``failure`` user attr of a trial failed for its silent heartbeat
# the status of a parent run found RUNNING after every worker that held it has gone
ABANDONED_PARENT_STATUS = "FAILED"


class StudySession:
    """A study file opened for work: its data, Optuna study, budget ledger and MLflow tracker.

    Everything that can be checked without writing is checked first: the study file, the data and its folds, that
    the storage (and, for a search, the MLflow store and artifact directory) can be reached or created. Bad input
    therefore fails before anything is written; only then are the study and the ledger created or opened, under
    :func:`~search.run.storage.init_lock` so that workers started at once do not create them twice."""

    def __init__(
        self, study_path: Path, *, allow_data_change: bool = False, with_data: bool = True, create: bool = True
    ) -> None:
        self.path = Path(study_path)
        self.file: StudyFile = load_study_file(self.path)
        self._dataset: Dataset | None = None
        if with_data:
            check_regular_file(self.file.data_spec.path)  # a wrong path: one line at once, before pandas is imported
            from objectives.data import check_folds, load_dataset

            self._dataset = load_dataset(self.file.data_spec)
            check_folds(self._dataset, self.file.cv.folds)
            from objectives.memory import check_trial_memory

            self.file.load_model_class()
            # before any store is opened for writing; a user's model is built and run on two rows here
            check_trial_memory(self._dataset, self.file.trial_config())
        import optuna  # after the checks that need no storage: bad input is refused without it

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.url = self.file.storage_url  # may hold a password: never shown, see storage_display
        self.storage_display = redact(self.file.storage_shown)
        if not create:
            require_existing_study_file(self.url, self.file.name)
        # every store checked before any is created; a search (with its data) will write to MLflow too
        check_stores(
            self.url,
            self.file.tracking_uri if with_data else None,
            self.file.artifact_location if with_data else None,
        )
        with init_lock(self.url):
            self.storage = open_optuna_storage(self.url)
            self.study = open_study(self.file.name, self.storage, create=create)
            self.study_id = self.storage.get_study_id_from_name(self.file.name)
            self.ledger = BudgetLedger(
                storage_engine(self.storage), self.file.name
            )  # the study's own database and pool
            if self._dataset is not None:
                self._check_model_settings()  # first: a refused run writes nothing
                self._check_fingerprint(self._dataset, allow_data_change)
        self.phases = self.file.phases
        self.bounds = distribution_bounds(self.phases)
        self._prepared: PreparedFolds | None = None

    @classmethod
    def existing(cls, study_path: Path) -> StudySession | None:
        """The study opened without its data when its storage already holds it, else None (nothing is created:
        a new study goes through the full checks of the constructor first). For a search to learn, at the cost
        of reading the study file and one query, that the week's budget is already spent."""
        file = load_study_file(Path(study_path))
        check_store(file.storage_url, "storage")
        if not study_exists(file.storage_url, file.name):
            return None
        return cls(study_path, with_data=False, create=False)

    def close(self) -> None:
        storage_engine(self.storage).dispose()

    def trial_id(self, trial: optuna.Trial) -> int:
        """The storage's id of a trial of this study (heartbeats and stale trials are kept by id), through the
        storage's public lookup by the trial's number."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    @property
    def dataset(self) -> Dataset:
        """The study's data, loaded by the constructor (a session opened with ``with_data=False`` has none)."""
        if self._dataset is None:
            raise RuntimeError(f"the study {self.file.name!r} was opened without its data")
        return self._dataset

    @property
    def prepared(self) -> PreparedFolds:
        """Folds and their preprocessing, made once per process: every trial of the study shares them."""
        if self._prepared is None:
            from objectives.evaluate import prepare_folds

            self._prepared = prepare_folds(self.dataset, self.file.cv, self.file.trial_config().model.numeric_encoding)
        return self._prepared

    def _check_fingerprint(self, dataset: Dataset, allow_change: bool) -> None:
        stored = read_study(self.study)
        recorded = stored.data_fingerprint
        current = dataset.fingerprint
        if recorded is None:
            write_study(self.study, data_fingerprint=current)
        elif recorded != current:
            if not allow_change:
                raise LosstuneError(
                    f"{self.file.data_spec.path.name} changed since this study started (fingerprint {current}, "
                    f"study has {recorded}): trials on different data are not comparable. Start a new study "
                    "(another name:), or pass --allow-data-change to continue and tag the following trials"
                )
            log.warning("data changed (%s -> %s): continuing, following trials are tagged", recorded, current)
            history = stored.data_fingerprint_history or (recorded,)
            write_study(self.study, data_fingerprint_history=[*history, current], data_fingerprint=current)

    def _check_model_settings(self) -> None:
        check_trained_settings(self.study, self.file.trial_config(), self.file.name)

    def tracker(self) -> StudyTracker:
        from search.tracking.tracker import StudyTracker

        check_tracking_reachable(self.file.tracking_uri)  # one line in seconds, not MLflow's minutes of retries
        return StudyTracker(self.file.tracking_uri, self.file.experiment, artifact_location=self.file.artifact_location)

    def budget_for_week(self, override: int | None) -> int:
        return self.file.budget.trials_per_week if override is None else override

    def reconcile_stale(self, tracker: StudyTracker | None) -> int:
        """Trials of dead workers (no heartbeat for the grace period): their MLflow runs closed FAILED, then the
        trials marked FAIL in Optuna with ``failure=stale`` and the reason, like every failed trial. MLflow first:
        a process killed in between leaves the trial RUNNING and stale, so the next run repairs both again.
        Without a tracker, MLflow is opened only when there is something to repair. Returns how many MLflow runs
        were closed."""
        with quiet_optuna():
            adopt_silent_trials(self.storage, self.study_id)
            stale = stale_trial_ids(self.storage, self.study_id)
        if tracker is None:
            if not stale and not read_study(self.study).mlflow_parent_open:
                return 0  # nothing a dead worker left: no need to open MLflow at all
            tracker = self.tracker()
        numbers = {self.storage.get_trial_number_from_id(trial_id) for trial_id in stale}
        closed = close_orphan_runs(self.study, tracker, stale_numbers=numbers)
        for trial_id in stale:
            fail_stale_trial(self.storage, trial_id, STALE_FAILURE, STALE_REASON)
        return closed

    def close_abandoned_parent(self, tracker: StudyTracker | None = None) -> bool:
        """End the study's MLflow parent run if a search left it RUNNING and no trial is running any more (a
        worker killed during the week's last trial, say). True when it was closed. Opens MLflow only when the
        study records its parent run as open."""
        from optuna.trial import TrialState

        stored = read_study(self.study)
        parent = stored.mlflow_parent_run_id
        if not parent or not stored.mlflow_parent_open:
            return False
        if any(t.state == TrialState.RUNNING for t in self.study.get_trials(deepcopy=False)):
            return False  # a live worker still holds it; it closes the parent when it ends
        tracker = tracker or self.tracker()
        run = tracker.find_run(parent)
        closed = run is not None and run.info.status == "RUNNING"
        if closed:
            tracker.set_parent_finished(parent, ABANDONED_PARENT_STATUS)
            log.info("closed the study's MLflow parent run %s, left RUNNING by a stopped search", parent)
        write_study(self.study, mlflow_parent_open=False)
        return closed


def close_orphan_runs(study: optuna.Study, tracker: StudyTracker, stale_numbers: Collection[int] = frozenset()) -> int:
    """Close the MLflow runs left RUNNING by workers that died: the run of a FAIL trial ends FAILED (with the
    trial's reason, or that its worker stopped), the run of a COMPLETE trial (killed after telling Optuna, its
    metrics already logged) ends FINISHED. A run is matched to its trial by the trial's ``mlflow_run_id``, or,
    for a worker killed before recording that, by the run's trial number under this study's parent run. The
    trials numbered in ``stale_numbers`` (still RUNNING, about to be failed as stale) count as failed."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
    from optuna.trial import TrialState

    from search.tracking.mlflow_store import TAG_TRIAL

    trials = study.get_trials(deepcopy=False)
    records = {t.number: read_trial(t) for t in trials}
    linked = {run_id: t for t in trials if (run_id := records[t.number].mlflow_run_id) is not None}
    by_number = {t.number: t for t in trials}
    parent = read_study(study).mlflow_parent_run_id
    closed = 0
    for run in tracker.running_runs():
        tags = run.data.tags
        trial = linked.get(run.info.run_id)
        if trial is None and parent and tags.get(MLFLOW_PARENT_RUN_ID) == parent and tags.get(TAG_TRIAL, "").isdigit():
            trial = by_number.get(int(tags[TAG_TRIAL]))
        if trial is None:
            continue
        if trial.number in stale_numbers:
            tracker.fail_trial(run.info.run_id, STALE_REASON)
        elif trial.state not in (TrialState.FAIL, TrialState.COMPLETE):
            continue
        elif trial.state == TrialState.FAIL:
            tracker.fail_trial(run.info.run_id, records[trial.number].failure_reason or STALE_REASON)
        else:
            tracker.mark_finished(run.info.run_id)
        closed += 1
    if closed:
        log.info("closed %d MLflow run(s) left RUNNING by stopped workers", closed)
    return closed
