"""``losstune search``: spend this week's budget on the phased plan, one trial at a time, every trial in MLflow.

One worker's loop, top to bottom: find where the plan stands from the stored trials; reserve a budget slot (and,
for a grid point, claim it); ask Optuna for a trial with the step's parameters fixed or sampled; evaluate it
while beating a heartbeat; tell Optuna; log it to MLflow. Several workers (processes here, or machines on one
PostgreSQL) run the same loop; the ledger and the claims keep them from overspending or duplicating.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.samplers import PartialFixedSampler, RandomSampler, TPESampler
from optuna.trial import TrialState
from pydantic import ValidationError

from objectives.config import LossConfig, TrialConfig
from objectives.data import Dataset, load_dataset
from objectives.errors import LosstuneError, TrainingDiverged
from objectives.evaluate import EvaluationResult, PreparedFolds, evaluate, prepare_folds
from search.budget import BudgetLedger, iso_week, worker_id
from search.plan import Step, Wait, distribution_bounds, next_step
from search.results import results_table, trial_records
from search.storage import heartbeat, open_engine, open_optuna_storage, quiet_optuna, redact
from search.study_file import LOSS_PARAMS, StudyFile, load_study_file
from search.tracking import StudyTracker

log = logging.getLogger(__name__)

TPE_STARTUP_TRIALS = 2  # TPE's default of 10 random trials would spend a whole week's budget at random
WAIT_POLL_SECONDS = 5.0
STALE_REASON = "worker stopped without finishing the trial (no heartbeat): retried"


@dataclass(frozen=True)
class SearchOptions:
    budget: int | None = None  # this week's budget, instead of budget.trials_per_week
    workers: int = 1
    timeout: float | None = None  # seconds; no new trial starts after it
    allow_data_change: bool = False
    progress: bool = True


class StudySession:
    """A study file opened for work: its data, Optuna study, budget ledger and MLflow tracker."""

    def __init__(self, study_path: Path, *, allow_data_change: bool = False, with_data: bool = True) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.path = Path(study_path)
        self.file: StudyFile = load_study_file(self.path)
        # Data first: bad input fails before any storage or tracking is touched.
        self.dataset: Dataset | None = load_dataset(self.file.data_spec) if with_data else None
        url = self.file.storage_url
        self.storage = open_optuna_storage(url)
        self.study = optuna.create_study(
            study_name=self.file.name, storage=self.storage, direction="maximize", load_if_exists=True
        )
        self.ledger = BudgetLedger(open_engine(url), self.file.name)
        self.storage_display = redact(url)
        self.phases = self.file.phases
        self.bounds = distribution_bounds(self.phases)
        self._prepared: PreparedFolds | None = None
        if self.dataset is not None:
            self._check_fingerprint(allow_data_change)

    @property
    def prepared(self) -> PreparedFolds:
        """Folds and their preprocessing, made once per process: every trial of the study shares them."""
        if self._prepared is None:
            self._prepared = prepare_folds(self.dataset, self.file.cv)
        return self._prepared

    def _check_fingerprint(self, allow_change: bool) -> None:
        recorded = self.study.user_attrs.get("data_fingerprint")
        current = self.dataset.fingerprint
        if recorded is None:
            self.study.set_user_attr("data_fingerprint", current)
        elif recorded != current:
            if not allow_change:
                raise LosstuneError(
                    f"{self.file.data_spec.path.name} changed since this study started (fingerprint {current}, "
                    f"study has {recorded}): trials on different data are not comparable. Start a new study "
                    "(another name:), or pass --allow-data-change to continue and tag the following trials"
                )
            log.warning("data changed (%s -> %s): continuing, following trials are tagged", recorded, current)
            history = list(self.study.user_attrs.get("data_fingerprint_history", [recorded]))
            self.study.set_user_attr("data_fingerprint_history", [*history, current])
            self.study.set_user_attr("data_fingerprint", current)

    def tracker(self) -> StudyTracker:
        return StudyTracker(self.file.tracking_uri, self.file.experiment, artifact_location=self.file.artifact_location)

    def budget_for_week(self, override: int | None) -> int:
        return self.file.budget.trials_per_week if override is None else override

    def reconcile_stale(self, tracker: StudyTracker | None) -> int:
        """Trials of dead workers: FAIL them in Optuna (heartbeat) and their MLflow runs too."""
        with quiet_optuna():
            optuna.storages.fail_stale_trials(self.study)
        if tracker is None:
            return 0
        run_ids = [
            t.user_attrs["mlflow_run_id"] for t in self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if "mlflow_run_id" in t.user_attrs
        ]  # fmt: skip
        return tracker.fail_stale_runs(run_ids, STALE_REASON)


@dataclass
class TrialOutcome:
    number: int
    phase: str
    loss: dict
    state: str
    result: EvaluationResult | None = None
    reason: str | None = None


class Worker:
    """Runs trials of one study until the week's budget, the plan or the time is used up."""

    def __init__(self, session: StudySession, options: SearchOptions, week: str, parent_run_id: str, echo) -> None:
        self.s = session
        self.options = options
        self.week = week
        self.budget = session.budget_for_week(options.budget)
        self.parent_run_id = parent_run_id
        self.tracker = session.tracker()
        self.echo = echo
        self.deadline = None if options.timeout is None else time.monotonic() + options.timeout

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self, on_trial=None) -> list[TrialOutcome]:
        outcomes = []
        while not self._out_of_time():
            step = self._next_step()
            if step is None:
                break
            slot = self.s.ledger.reserve(self.week, self.budget)
            if slot is None:
                break
            if step.claim is not None and not self.s.ledger.claim(step.claim):
                self.s.ledger.release(self.week, slot)  # another worker is on this point; look again
                time.sleep(0.2)
                continue
            outcome = self.run_trial(step, slot)
            outcomes.append(outcome)
            if on_trial:
                on_trial(outcome)
        return outcomes

    def _next_step(self) -> Step | None:
        while True:
            step = next_step(self.s.phases, trial_records(self.s.study))
            if not isinstance(step, Wait):
                return step
            if self._out_of_time():
                return None
            log.info("phase %s: waiting for trial(s) %s running elsewhere", step.phase.name, step.running)
            time.sleep(WAIT_POLL_SECONDS)
            self.s.reconcile_stale(self.tracker)

    def _sampler(self, step: Step, n_trials: int):
        fixed = {k: v for k, v in step.fixed.items() if v is not None}
        if step.loss is not None:
            return PartialFixedSampler(fixed_params=fixed, base_sampler=RandomSampler(seed=0))
        tpe = TPESampler(
            n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True, seed=self.s.file.cv.seed * 100_003 + n_trials
        )
        return PartialFixedSampler(fixed_params=fixed, base_sampler=tpe) if fixed else tpe

    def _suggest(self, trial: optuna.Trial, step: Step) -> dict[str, float | None]:
        loss: dict[str, float | None] = {}
        sampled = step.space or {}
        for name in LOSS_PARAMS:
            if name not in sampled and step.fixed.get(name) is None:
                loss[name] = None  # alpha=None: no class weighting, so no alpha parameter at all
                continue
            low, high = sampled.get(name, self.s.bounds[name])
            loss[name] = trial.suggest_float(name, low, high)
        return loss

    def run_trial(self, step: Step, slot: int) -> TrialOutcome:
        study = self.s.study
        with quiet_optuna():
            study.sampler = self._sampler(step, len(study.get_trials(deepcopy=False)))
            trial = study.ask()
        self.s.ledger.attach(self.week, slot, trial.number)
        with quiet_optuna():
            loss = self._suggest(trial, step)
        attrs = {
            "phase": step.phase.name, "phase_index": step.phase_index, "week": self.week, "loss": loss,
            "slot": slot, "worker": worker_id(), "data_fingerprint": self.s.dataset.fingerprint,
        }  # fmt: skip
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        try:
            config = self.s.file.trial_config(LossConfig(**loss))
        except ValidationError as exc:
            reason = f"invalid configuration: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
            trial.set_user_attr("failure", "invalid")
            trial.set_user_attr("failure_reason", reason)
            study.tell(trial, state=TrialState.FAIL)
            return TrialOutcome(trial.number, step.phase.name, loss, "FAIL", reason=reason)

        run_id = self.tracker.start_trial(
            self.parent_run_id, trial.number, step.phase.name, self.week, config, self.s.dataset.fingerprint,
            extra_tags=self._data_change_tags(),
        )  # fmt: skip
        trial.set_user_attr("mlflow_run_id", run_id)
        try:
            with heartbeat(self.s.storage, trial._trial_id):
                result = evaluate(self.s.dataset, config, self.s.prepared)
        except TrainingDiverged as exc:
            return self._fail(trial, run_id, step, loss, "diverged", str(exc))
        except KeyboardInterrupt:
            self._fail(trial, run_id, step, loss, "interrupted", "interrupted (Ctrl-C)", status="KILLED")
            raise
        except BaseException as exc:
            self._fail(trial, run_id, step, loss, "error", f"{type(exc).__name__}: {exc}")
            raise
        for key, value in {"honest_score": result.honest_score_mean, "threshold": result.threshold,
                           "seconds": result.seconds, "honest_score_std": result.honest_score_std}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, result.oof_score)
        self.tracker.finish_trial(run_id, result, self.s.dataset, config)
        self.tracker.log_study_summary(self.parent_run_id, results_table(study), study)
        return TrialOutcome(trial.number, step.phase.name, loss, "COMPLETE", result=result)

    def _fail(self, trial, run_id, step, loss, kind, reason, status="FAILED") -> TrialOutcome:
        trial.set_user_attr("failure", kind)
        trial.set_user_attr("failure_reason", reason)
        self.s.study.tell(trial, state=TrialState.FAIL)
        self.tracker.fail_trial(run_id, reason, status=status)
        self.tracker.log_study_summary(self.parent_run_id, results_table(self.s.study), self.s.study)
        return TrialOutcome(trial.number, step.phase.name, loss, "FAIL", reason=reason)

    def _data_change_tags(self) -> dict[str, str]:
        history = self.s.study.user_attrs.get("data_fingerprint_history")
        return {"losstune.data_changed": "true", "losstune.data_previous": history[-2]} if history else {}


def format_outcome(o: TrialOutcome, metric: str) -> str:
    params = " ".join(f"{k}={'None' if v is None else f'{v:.3g}'}" for k, v in o.loss.items())
    if o.result is None:
        return f"t{o.number:03d} {o.phase:<8} {params}  FAILED: {o.reason}"
    r = o.result
    return (
        f"t{o.number:03d} {o.phase:<8} {params}  {metric} {r.oof_score:.4f} "
        f"(honest {r.honest_score_mean:.4f})  threshold {r.threshold:.3f}  {r.seconds:.1f}s"
    )


def _worker_process(study_path: str, options: SearchOptions, week: str, parent_run_id: str) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    session = StudySession(Path(study_path), allow_data_change=options.allow_data_change)
    worker = Worker(session, options, week, parent_run_id, echo=print)
    metric = session.file.trial_config().metric.label
    worker.run(on_trial=lambda o: print(format_outcome(o, metric), flush=True))


def run_search(study_path: Path, options: SearchOptions, echo=print) -> int:
    session = StudySession(study_path, allow_data_change=options.allow_data_change)
    week = iso_week()
    budget = session.budget_for_week(options.budget)
    tracker = session.tracker()
    stale = session.reconcile_stale(tracker)
    if stale:
        echo(f"marked {stale} MLflow run(s) of stopped workers FAILED")
    spent = session.ledger.spent(week)
    if spent >= budget:
        echo(f"budget for {week} spent: {spent}/{budget}")
        return 0
    if next_step(session.phases, trial_records(session.study)) is None:
        echo("the plan is complete: every phase has run (add a phase, or a tpe phase without 'trials')")
        return 0
    parent = tracker.ensure_parent_run(session.file.name, session.study.user_attrs.get("mlflow_parent_run_id"))
    session.study.set_user_attr("mlflow_parent_run_id", parent)
    metric = session.file.trial_config().metric.label
    echo(f"study {session.file.name}: {session.dataset.n_rows} rows, week {week}, budget {spent}/{budget} used, "
         f"storage {session.storage_display}")  # fmt: skip
    try:
        if options.workers <= 1:
            _run_in_process(session, options, week, parent, budget - spent, metric, echo)
        else:
            _run_workers(study_path, options, week, parent)
    finally:
        tracker.set_parent_finished(parent)
    _print_summary(session, tracker, week, budget, echo)
    return 0


def _run_in_process(session, options, week, parent, remaining, metric, echo) -> None:
    from tqdm import tqdm

    worker = Worker(session, options, week, parent, echo)
    with tqdm(total=remaining, unit="trial", disable=not options.progress, file=sys.stderr, leave=False) as bar:
        def on_trial(o: TrialOutcome) -> None:
            bar.update(1)
            bar.write(format_outcome(o, metric))

        try:
            worker.run(on_trial=on_trial)
        except KeyboardInterrupt:
            bar.close()
            done = session.ledger.spent(week)
            echo(f"interrupted: the current trial is marked FAILED (it will be retried); {done} slot(s) used in {week}")
            raise


def _run_workers(study_path: Path, options: SearchOptions, week: str, parent: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_process, args=(str(study_path), options, week, parent), name=f"losstune-worker-{i}")
        for i in range(options.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"worker process(es) {failed} exited with an error (see their output above)")


def _print_summary(session: StudySession, tracker: StudyTracker, week: str, budget: int, echo) -> None:
    records = trial_records(session.study)
    complete = [r for r in records if r.state == "COMPLETE"]
    if complete:
        best = max(complete, key=lambda r: (r.value, -r.number))
        echo(f"best: trial {best.number} ({best.phase}) " + " ".join(f"{k}={v}" for k, v in best.loss.items())
             + f"  score {best.value:.4f}")  # fmt: skip
    step = next_step(session.phases, records)
    phase = "complete" if step is None else step.phase.name
    echo(f"budget {session.ledger.spent(week)}/{budget} used in {week}; plan phase: {phase}")
    echo(f"compare trials: {tracker.ui_command()}")
