"""The yardstick (objectives.baseline): exactly the study's splits, scored as a trial, paired with a trial."""

from __future__ import annotations

import json

import numpy as np
import pytest

from objectives.baseline import baseline_line, evaluate_baseline, versus_baseline
from objectives.config import CVConfig
from objectives.evaluate import evaluate
from objectives.scoring import score_oof
from objectives.stats import corrected_se
from search.cli import main
from tests.test_cli_evaluate import evaluate_args


@pytest.mark.parametrize("repeats", [1, 2])
def test_baseline_uses_exactly_the_trials_folds(small_dataset, fast_config, repeats):
    config = fast_config.model_copy(update={"cv": CVConfig(folds=3, seed=5, repeats=repeats)})
    trial = evaluate(small_dataset, config)
    baseline = evaluate_baseline(small_dataset, config.cv, config.metric)
    # the same rows in the same fold, every repeat: the comparison is paired
    np.testing.assert_array_equal(baseline.fold_of_row_by_repeat, trial.fold_of_row_by_repeat)
    other = evaluate_baseline(small_dataset, CVConfig(folds=3, seed=6, repeats=repeats), config.metric)
    assert not np.array_equal(other.fold_of_row_by_repeat, trial.fold_of_row_by_repeat)  # the seed matters


def test_baseline_is_scored_as_a_trial(small_dataset, fast_config):
    baseline = evaluate_baseline(small_dataset, fast_config.cv, fast_config.metric)
    again = score_oof(small_dataset.y, baseline.oof_proba_by_repeat, baseline.fold_of_row_by_repeat, fast_config.metric)
    assert baseline.oof_score == pytest.approx(again.oof_score, abs=1e-12)
    assert baseline.threshold == pytest.approx(again.threshold, abs=1e-12)
    assert baseline.estimate.se == pytest.approx(corrected_se(again.fold_scores, 3), abs=1e-12)
    # a learnable table: the yardstick learns it
    assert baseline.oof_score > 0.6


def test_versus_baseline_is_the_paired_fold_difference(small_dataset, fast_config):
    trial = evaluate(small_dataset, fast_config)
    baseline = evaluate_baseline(small_dataset, fast_config.cv, fast_config.metric)
    versus = versus_baseline(trial.fold_scores, trial.oof_score, baseline.record())
    diffs = np.subtract(trial.fold_scores, baseline.fold_scores)
    assert versus.diff == pytest.approx(trial.oof_score - baseline.oof_score, abs=1e-12)
    assert versus.se == pytest.approx(corrected_se(diffs, 3), abs=1e-12)
    line = baseline_line(baseline.record(), versus)
    assert line.startswith(f"baseline gradient boosting {baseline.oof_score:.3f} ± ")
    assert ("behind" if versus.diff < 0 else "ahead") in line


def test_evaluate_baseline_cli(write_csv, capsys):
    rc = main(evaluate_args(write_csv(), "--baseline", "--json"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads(out)
    b = result["baseline"]
    assert b["model"] == "gradient boosting" and len(b["fold_scores"]) == 3
    assert b["versus"]["diff"] == pytest.approx(result["oof_score"] - b["score"], abs=1e-9)
    rc = main(evaluate_args(write_csv(), "--baseline"))
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "baseline gradient boosting" in out and "this configuration" in out


def test_search_records_the_baseline_once_in_status_and_the_parent_run(tmp_path, capsys, monkeypatch):
    from search.run.session import StudySession
    from search.run.status import format_status, study_status
    from tests.conftest import tiny_study

    monkeypatch.chdir(tmp_path)
    path = tiny_study(tmp_path, "yard", budget=2, rows=120, data_seed=1, epochs=1)
    assert main(["search", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("baseline gradient boosting") == 2  # before the trials, and beside the best after them
    status = study_status(path)
    assert status["spent"] == 2  # the yardstick took no budget slot: two trials for a budget of two
    b = status["baseline"]
    assert len(b["fold_scores"]) == 3 and b["versus_best"]["trial"] == status["best"]["trial"]
    assert b["versus_best"]["diff"] == pytest.approx(status["best"]["score"] - b["score"], abs=1e-9)
    assert b["line"] in format_status(status)
    session = StudySession(path, with_data=False, create=False)
    stored = session.study.user_attrs["baseline"]
    run = session.tracker().client.get_run(session.study.user_attrs["mlflow_parent_run_id"])
    assert run.data.metrics["baseline_score"] == pytest.approx(stored["score"])
    assert run.data.metrics["best_vs_baseline"] == pytest.approx(b["versus_best"]["diff"])
    assert run.data.tags["losstune.baseline"] == b["line"]
    assert "HistGradientBoostingClassifier" in run.data.params["baseline_model"]
