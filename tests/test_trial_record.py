"""The trial record typed at its source (:mod:`search.study.trial_record`, :mod:`search.study.study_record`): the
only modules of ``search/`` that touch Optuna's user attrs; a record written and read back through a real Optuna
study (in memory and SQLite) is the same record, on disk as flat JSON user attrs; a corrupt stored value is one
line naming the trial and the key."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from objectives.config import CVConfig, LossConfig, ModelConfig, TrialConfig
from objectives.errors import LosstuneError
from search.study.stored_config import stored_config, stored_loss
from search.study.study_record import read_study, write_study
from search.study.trial_record import CONFIG_VERSION, StoredTrial, read_trial, write_trial

ROOT = Path(__file__).resolve().parents[1]
ACCESSORS = {"search/study/trial_record.py", "search/study/study_record.py"}
USER_ATTRS = re.compile(r"user_attrs|set_user_attr")


def test_only_the_record_modules_touch_user_attrs():
    offenders = [
        f"{path.relative_to(ROOT).as_posix()}:{n}"
        for path in sorted((ROOT / "search").rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in ACCESSORS
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if USER_ATTRS.search(line)
    ]
    assert offenders == [], f"read and write a trial's or a study's attrs through {sorted(ACCESSORS)}: {offenders}"


@pytest.fixture(params=["memory", "sqlite"])
def study(request, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None if request.param == "memory" else f"sqlite:///{tmp_path / 'record.db'}"
    return optuna.create_study(storage=storage, direction="maximize")


CONFIG = TrialConfig(loss=LossConfig(gamma=1.5, alpha=0.25), cv=CVConfig(folds=3, seed=1000, repeats=2))


def test_a_record_round_trips_through_optuna(study):
    trial = study.ask()
    loss = CONFIG.loss
    write_trial(
        trial, phase="confirm", phase_index=2, week="2026-W47", slot=3, worker="host:1", loss=loss, cv=CONFIG.cv
    )
    write_trial(trial, trial_config=CONFIG, cv_seed=1000, data_fingerprint="sha256:x", mlflow_run_id="abc")
    told = StoredTrial(
        threshold=0.4,
        honest_score=0.6,
        folds=3,
        repeats=2,
        fold_scores=(0.6, 0.61, 0.62, 0.6, 0.61, 0.63),
        cv_score_se=0.01,
        reference_trial=0,
        diff_vs_reference=0.02,
        diff_vs_reference_se=0.005,
        verdict_vs_reference="better",
        is_reference=False,
    )
    write_trial(trial, told)
    study.tell(trial, 0.61)
    frozen = study.get_trials()[0]
    record = read_trial(frozen)
    assert (record.phase, record.phase_index, record.week, record.slot, record.worker) == (
        "confirm",
        2,
        "2026-W47",
        3,
        "host:1",
    )
    assert record.trial_config == CONFIG and stored_config(frozen) == CONFIG
    assert record.cv == CONFIG.cv and stored_loss(frozen) == loss
    assert record.fold_scores == told.fold_scores and record.verdict_vs_reference == "better"
    c = record.comparison("reference")
    assert c is not None and (c.trial, c.diff, c.se, c.verdict) == (0, 0.02, 0.005, "better")
    assert record.comparison("best") is None and record.failure is None
    # on disk: flat JSON user attrs under the fields' names, the configuration versioned
    attrs = frozen.user_attrs
    assert attrs["trial_config"] == {"version": CONFIG_VERSION, **CONFIG.model_dump(mode="json")}
    assert attrs["fold_scores"] == list(told.fold_scores) and attrs["cv"] == CONFIG.cv.model_dump()
    assert attrs["loss"] == {"alpha": 0.25, "gamma": 1.5, "bce_weight": 0.5, "focal_weight": 0.5}
    assert "best_trial" not in attrs  # only what was written


def test_a_failed_trial_and_a_bare_one_read_with_their_fields_absent(study):
    trial = study.ask()
    write_trial(trial, failure="diverged", failure_reason="loss is NaN")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    bare = study.ask()  # a trial killed between Optuna's ask and its attrs
    record, empty = read_trial(study.get_trials()[0]), read_trial(study.get_trials()[1])
    assert (record.failure, record.failure_reason, record.threshold) == ("diverged", "loss is NaN", None)
    assert empty == StoredTrial() and empty.phase_name == "?"
    assert bare.number == 1


def test_a_corrupt_stored_value_is_one_line_naming_the_trial_and_the_key(study):
    trial = study.ask()
    trial.set_user_attr("fold_scores", [0.5, "x"])  # as another program (or a bad edit of the database) left it
    with pytest.raises(LosstuneError) as err:
        read_trial(study.get_trials()[0])
    assert str(err.value).startswith("trial 0's stored fold_scores[1]: ") and "\n" not in str(err.value)
    other = study.ask()
    other.set_user_attr("trial_config", {"version": 99})
    with pytest.raises(
        LosstuneError, match=r"^trial 1's stored trial_config: version 99; this losstune reads version 1"
    ):
        read_trial(study.get_trials()[1])


def test_a_refused_loss_is_stored_as_its_values_and_read_back_as_refused(study):
    """The ``loss`` attr stays the values by name on disk; read back, a point LossConfig refuses is a RefusedLoss
    with the same config_key as the plan's point, so the plan matches it to its failed trial."""
    from search.study.loss_point import RefusedLoss, config_key, with_values

    point = with_values(LossConfig(bce_weight=0.0, focal_weight=1.0), {"focal_weight": 0.0})
    assert isinstance(point, RefusedLoss) and "both 0" in point.reason
    trial = study.ask()
    write_trial(trial, phase="weights", loss=point, failure="invalid", failure_reason=point.reason)
    frozen = study.get_trials()[0]
    assert frozen.user_attrs["loss"] == {"alpha": None, "gamma": 2.0, "bce_weight": 0.0, "focal_weight": 0.0}
    stored = read_trial(frozen).loss
    assert stored == point and config_key(stored) == config_key(point) and stored_loss(frozen) == point
    trial = study.ask()
    trial.set_user_attr("loss", {"alpha": None, "gamma": "x", "bce_weight": 0.5, "focal_weight": 0.5})
    with pytest.raises(LosstuneError, match=r"^trial 1's stored loss: .*gamma: 'x' is not a number"):
        read_trial(study.get_trials()[1])


def test_writing_an_unknown_field_or_a_wrong_type_is_refused_before_anything_is_stored(study):
    trial = study.ask()
    with pytest.raises(TypeError, match="no field"):
        write_trial(trial, fold_score=[0.5])
    with pytest.raises(ValueError):
        write_trial(trial, phase="grid", failure="exploded")
    assert study.get_trials()[0].user_attrs == {}


def test_the_study_record_round_trips_and_says_what_is_corrupt(study):
    write_study(study, mlflow_parent_run_id="p", mlflow_parent_open=True, data_fingerprint="a")
    write_study(study, data_fingerprint_history=["a", "b"], data_fingerprint="b")
    stored = read_study(study)
    assert (stored.mlflow_parent_run_id, stored.mlflow_parent_open, stored.data_fingerprint) == ("p", True, "b")
    assert stored.data_fingerprint_history == ("a", "b") and stored.baseline is None
    study.set_user_attr("mlflow_parent_open", "maybe")
    with pytest.raises(LosstuneError, match=r"^the study's stored mlflow_parent_open: "):
        read_study(study)


def test_study_fields_are_written_in_the_order_given():
    """The data-change history is written before the fingerprint it records: a crash between the two writes then
    finds the change again next run instead of losing it."""

    class Recording:
        def __init__(self) -> None:
            self.keys: list[str] = []

        def set_user_attr(self, key: str, value: object) -> None:
            self.keys.append(key)

    study = Recording()
    write_study(study, data_fingerprint_history=["a", "b"], data_fingerprint="b")
    assert study.keys == ["data_fingerprint_history", "data_fingerprint"]


def test_a_stored_model_without_embedding_key_is_the_model_an_earlier_losstune_trained():
    """Before 0.3.0 the default was no embedding and a dump left the key out; the default is now the
    target-aware embedding, so a stored trial or exported file without the key still means none, while every
    dump written now names its embedding."""
    written_by_0_2 = {"hidden": [128, 64], "dropout": 0.0, "numeric_scaling": "standard"}
    raw = {"version": CONFIG_VERSION, **TrialConfig().model_dump(mode="json"), "model": written_by_0_2}
    stored = StoredTrial.model_validate({"trial_config": raw})
    assert stored.trial_config is not None and stored.trial_config.model.numeric_embedding == "none"
    assert stored.trial_config.model.numeric_encoding.width == 1
    assert TrialConfig().model_dump(mode="json")["model"]["numeric_embedding"] == "piecewise_linear_target"
    plain = ModelConfig(numeric_embedding="none")
    assert plain.model_dump()["numeric_embedding"] == "none" and "embedding_bins" not in plain.model_dump()
    assert TrialConfig(model=plain).flat_params()["embedding_bins"] is None
    # the same rule for an exported configuration (tests/test_model_dir_and_predict.py reads one back)
    assert ModelConfig.model_validate(ModelConfig.from_stored(written_by_0_2)).numeric_embedding == "none"
