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
    assert baseline.oof_score == pytest.approx(again["oof_score"], abs=1e-12)
    assert baseline.threshold == pytest.approx(again["threshold"], abs=1e-12)
    assert baseline.estimate.se == pytest.approx(corrected_se(again["fold_scores"], 3), abs=1e-12)
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
