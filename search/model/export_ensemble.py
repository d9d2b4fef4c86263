"""``losstune export --by ensemble``: the study's ensemble (:mod:`search.study.study_ensemble`) as one exported
file: every member's full configuration (its trial's stored one) with its weight and the seed its final model
is trained with, the ensemble's threshold, and its selection-corrected estimate. ``losstune train`` fits each
member on all rows into one model directory; ``predict`` and the pyfunc model average the members'
probabilities with the weights and compare the average with the threshold.

Every member's final model starts from the study's CV seed, as the member's trial alone would be trained by
``export --trial N`` / ``train``: distinct seeds (the CV seed plus the trial number) were measured to add nothing
beyond the seed-to-seed noise of a final model (tests/benchmarks/ensemble_last_run.md: -0.006 test F1 on average,
better on 3 of 6 splits), and with shared seeds a one-member ensemble is exactly its trial's model.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from objectives.config import TrialConfig
from objectives.errors import LosstuneError
from search.model.export_trial import load_study, module_dir_of, versions
from search.model.exported_config import EnsembleMember, EnsembleSpec, ExportedConfig, Provenance, dump_exported
from search.study.oof_store import oof_dir
from search.study.results import plan_trials
from search.study.stored_config import stored_config
from search.study.study_ensemble import StudyEnsemble, study_ensemble
from search.study.study_file import StudyFile, load_study_file
from search.study.study_record import read_study
from search.study.trial_record import read_trial

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

BASIS = (
    "BBC-CV (bootstrap bias-corrected CV, Tsamardinos et al. 2018) of the whole ensemble selection over the "
    "stored OOF predictions of {n} trials: corrected for choosing among them and for the ensemble's own weights "
    "and threshold; not for luck shared by a fold's rows (one fold model's initial weights), nor for the final "
    "models training on all rows"
)


def member_seed(cv_seed: int, trial: int, distinct: bool = False) -> int:
    """The final model's initialisation seed of the member from ``trial``: the study's by default, or distinct
    per member (what the benchmark compared)."""
    return cv_seed + trial if distinct else cv_seed


def export_ensemble(
    study_path: Path, out: Path, fmt: Literal["yaml", "json"] = "yaml", log_to_mlflow: bool = True
) -> tuple[ExportedConfig, str | None]:
    """Write the study's ensemble to ``out`` and log it on the study's parent run; returns the file's content
    and the run id it was logged on (None when not logged)."""
    file = load_study_file(study_path)
    study = load_study(file)
    found = study_ensemble(plan_trials(study), file)
    if found is None:
        raise LosstuneError(
            "no ensemble: fewer than two complete trials on the study's splits have stored OOF predictions in "
            f"{oof_dir(file.base_dir, file.name)} (each trial keeps them beside the study file of the machine that "
            "ran it; trials recorded by an older losstune have none): run `losstune search` here, export on the "
            "machine that ran the trials, or export one trial with --by mean"
        )
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    configs = [stored_config(trials[n]) for n in found.trials]
    exported = _exported(file.name, found, configs, trials, file)
    dump_exported(exported, out, fmt)
    run_id = read_study(study).mlflow_parent_run_id
    if not log_to_mlflow or not run_id:
        return exported, None
    from search.tracking.mlflow_locations import check_tracking_reachable
    from search.tracking.tracker import StudyTracker

    check_tracking_reachable(file.tracking_uri)
    tracker = StudyTracker(file.tracking_uri, file.experiment, artifact_location=file.artifact_location)
    tracker.client.log_artifact(run_id, str(out), artifact_path="export")
    tracker.client.set_tag(run_id, "losstune.exported_ensemble", f"export/{Path(out).name}")
    return exported, run_id


def _exported(
    name: str, found: StudyEnsemble, configs: list[TrialConfig], trials: dict[int, FrozenTrial], file: StudyFile
) -> ExportedConfig:
    lead = max(range(len(found.trials)), key=lambda i: (found.weights[i], -found.trials[i]))  # the heaviest member
    first = configs[lead]
    members = [
        EnsembleMember(
            trial=n,
            weight=w,
            loss=c.loss,
            seed=member_seed(c.cv.seed, n),
            cv_score=trials[n].value,
        )
        for n, w, c in zip(found.trials, found.weights, configs)
    ]
    for c, n in zip(configs, found.trials):
        if (c.model, c.train, c.cv, c.metric) != (first.model, first.train, first.cv, first.metric):
            raise LosstuneError(f"trial {n} ran with other model, training or CV settings: it cannot join the ensemble")
    spec = _spec(found, members)
    lead_trial = trials[found.trials[lead]]
    lead_record = read_trial(lead_trial)
    provenance = Provenance(
        study=name,
        trial=lead_trial.number,
        phase="ensemble",
        selected_by="ensemble",
        mlflow_run_id=lead_record.mlflow_run_id,
        experiment=file.experiment,
        tracking_uri=_display(file.tracking_uri),
        metric=first.metric.label,
        cv_score=found.oof_score,
        honest_score=found.honest_score,
        data_fingerprint=lead_record.data_fingerprint,
        week=lead_record.week,
        exported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        versions=versions(),
    )
    base = ExportedConfig.of_trial(first, found.threshold, file.data_spec, provenance, module_dir_of(first, file))
    return base.model_copy(update={"ensemble": spec})


def _spec(found: StudyEnsemble, members: list[EnsembleMember]) -> EnsembleSpec:
    return EnsembleSpec(
        members=members,
        pool=found.pool,
        oof_score=found.oof_score,
        oof_se=found.oof_se,
        honest_score=found.honest_score,
        honest_se=found.honest_se,
        estimate=found.estimate,
        estimate_low=found.estimate_low,
        estimate_high=found.estimate_high,
        estimate_basis=BASIS.format(n=len(found.pool)),
        reference_trial=found.reference_trial,
        diff_vs_reference=found.diff_vs_reference,
        diff_vs_reference_se=found.diff_vs_reference_se,
        verdict_vs_reference=found.verdict_vs_reference,
    )


def _display(uri: str) -> str:
    from search.tracking.mlflow_locations import normalise_tracking_uri, redact_uri

    return redact_uri(normalise_tracking_uri(uri))  # as a single trial's export writes it (no password)


def format_ensemble_export(exported: ExportedConfig, out: Path, run_id: str | None) -> str:
    e = exported.ensemble
    assert e is not None
    p = exported.provenance
    members = " ".join(f"t{m.trial}:{m.weight:.2f}(seed {m.seed})" for m in e.members)
    ref = (
        ""
        if e.diff_vs_reference is None
        else f", {e.diff_vs_reference:+.4f} ± {e.diff_vs_reference_se or float('nan'):.4f} vs reference "
        f"t{e.reference_trial}: {e.verdict_vs_reference} (selection-corrected)"
    )
    trials = f"{len(e.members)} trial{'s' * (len(e.members) != 1)}"
    lines = [
        f"exported the ensemble of {trials} of study {p.study!r} to {out}: {members}",
        f"threshold {exported.threshold:.4f}; OOF {p.metric} {e.oof_score:.4f}, "
        f"honest (nested) {e.honest_score:.4f}{ref}",
        f"estimate for unseen data: {p.metric} {e.estimate:.4f} ({e.estimate_low:.4f} to {e.estimate_high:.4f}; "
        f"BBC-CV, chosen among {len(e.pool)} trials)",
    ]
    if run_id:
        lines.append(f"logged on the study's MLflow parent run {run_id}")
    return "\n".join(lines)
