"""One truth in every view: the study's best trial and its reference are named the same by ``search``, ``status``,
``status --json``, the results table and its memo, the MLflow parent run's tags and description, the study
report and ``export --by auto``, after two weeks with confirm and refine trials. And the rule itself
(:func:`search.study.ranking.choose`): a later trial wins only when it beats the confirmed choice beyond the
noise, and the choice says which rule chose."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from objectives.config import LossConfig
from search.cli import main
from search.run.session import StudySession
from search.study.ranking import choose, reference_trial
from search.study.steps import config_key
from tests.conftest import tiny_study

PLAN = """\
  - name: balance
    fixed: {gamma: 2, alpha: null}
    grid: [{bce_weight: 0.5, focal_weight: 0.5}, {bce_weight: 1.0, focal_weight: 0.0},
           {bce_weight: 0.2, focal_weight: 0.8}]
  - name: confirm
    kind: confirm
    top: 2
    repeats: 2
  - name: refine
    kind: tpe
    space: {gamma: [0.0, 4.0], bce_weight: [0.0, 1.0]}
"""


def _loss(gamma: float, bce: float) -> dict:
    return {"alpha": None, "gamma": gamma, "bce_weight": bce, "focal_weight": 1.0 - bce}


def _trial(number: int, phase: str, index: int, loss: dict, folds: list[float], cv: dict | None = None):
    """A complete trial as the search stores it: its score is the mean of its fold scores."""
    value = sum(folds) / len(folds)
    attrs = {"phase": phase, "phase_index": index, "loss": loss, "fold_scores": folds, "folds": 3, "cv": cv}
    attrs["cv_seed"] = None if cv is None else cv["seed"]
    trial = create_trial(
        value=value,
        params={"gamma": loss["gamma"]},
        distributions={"gamma": FloatDistribution(0.0, 5.0)},
        user_attrs=attrs,
        state=TrialState.COMPLETE,
    )
    trial.number = number
    return trial


def _week(refine_folds: list[float]) -> list:
    """Three grid trials, a confirm phase of two (its best: the configuration of trial 1), then one refine trial."""
    confirm = {"seed": 1000, "repeats": 2}
    return [
        _trial(0, "balance", 0, _loss(2, 0.5), [0.60, 0.62, 0.61]),
        _trial(1, "balance", 0, _loss(2, 1.0), [0.62, 0.63, 0.62]),
        _trial(2, "balance", 0, _loss(2, 0.2), [0.59, 0.60, 0.60]),
        _trial(3, "confirm", 1, _loss(2, 0.5), [0.60, 0.61, 0.60, 0.61, 0.60, 0.61], cv=confirm),
        _trial(4, "confirm", 1, _loss(2, 1.0), [0.62, 0.62, 0.63, 0.62, 0.62, 0.63], cv=confirm),
        _trial(5, "refine", 2, _loss(1.3, 0.7), refine_folds),
    ]


def test_a_refine_trial_beyond_the_noise_wins_and_says_why():
    # beats trial 1 (the confirmed configuration on the study's seed) in every fold by a steady margin
    trials = _week([0.66, 0.67, 0.66])
    choice = choose(trials)
    assert choice is not None and (choice.number, choice.rule) == (5, "later")
    assert "trial 5 (refine, after the confirm phase)" in choice.why and "better beyond the noise" in choice.why
    # the explicit rules keep their meaning
    assert choose(trials, "confirmed").number == 4
    assert choose(trials, "mean").number == 5


def test_a_refine_trial_within_the_noise_does_not_displace_the_confirmed_choice():
    # a higher mean than trial 1, but fold by fold no steadier than noise
    trials = _week([0.70, 0.58, 0.61])
    assert trials[5].value > trials[1].value
    choice = choose(trials)
    assert choice is not None and (choice.number, choice.rule) == (4, "confirmed")
    assert "confirmed trial(s) on the fresh seed 1000" in choice.why


def test_before_a_confirm_phase_the_best_mean_and_one_reference():
    trials = _week([0.66, 0.67, 0.66])[:3]
    choice = choose(trials)
    assert choice is not None and (choice.number, choice.rule) == (1, "mean")
    # the reference's confirm re-run (trial 3) is its run on another seed, not a second reference
    assert reference_trial(_week([0.6, 0.6, 0.6]), config_key(LossConfig(**_loss(2, 0.5)))) == 0


@pytest.mark.slow
def test_every_view_names_the_same_best_trial_and_reference_after_two_weeks(tmp_path, monkeypatch, capsys):
    path = tiny_study(tmp_path, "truth", budget=3, plan=PLAN, cv_seed=5, epochs=3, rows=200)
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    assert main(["search", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-25T10:00:00")  # week 2: confirm, then refine
    assert main(["search", str(path), "--no-progress", "--budget", "6"]) == 0
    out = capsys.readouterr().out
    session = StudySession(path, with_data=False)
    trials = session.study.get_trials(deepcopy=False)
    phases = [t.user_attrs["phase"] for t in trials]
    assert phases.count("confirm") in (2, 3) and phases.count("refine") >= 3, phases
    choice = choose(trials)
    assert choice is not None
    best, rule = choice.number, choice.rule
    ref = reference_trial(trials, config_key(session.file.reference_loss))
    assert ref == 0

    # search: its summary, and every trial line of week 2 names the one reference
    assert re.search(rf"^best: trial {best} \(", out, re.M), out
    assert f"chosen by {rule}: " in out
    # the week's budget line says --budget replaced the study file's (status, below, goes by the file's)
    assert re.search(r"^budget 6/6 used in 2026-W48 \(--budget 6; the study file's trials_per_week is 3\)", out, re.M)
    vs = re.findall(r"vs (reference t\d{3})", out)
    assert vs and set(vs) == {f"reference t{ref:03d}"}, vs
    # status, as text and as JSON
    assert main(["status", str(path)]) == 0
    text = capsys.readouterr().out
    assert re.search(rf"^best: trial {best} \(", text, re.M) and f"reference: trial {ref} " in text
    # search's closing summary is status's, line for line (best, how sure, reference, ensemble, yardstick)
    said = out[out.index(f"best: trial {best} (") :].split("\nbudget ")[0].splitlines()
    shown = text[text.index(f"best: trial {best} (") :].split("\nchoices (")[0].splitlines()
    assert said == shown and any(line.startswith("baseline gradient boosting") for line in said), (said, shown)
    assert main(["status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["best"]["trial"], status["best"]["rule"], status["reference_trial"]) == (best, rule, ref)
    assert status["best"]["confidence"]["reference_trial"] in (ref, None)
    # the results table's memo: the best and the reference marked once each
    memos = {row["trial"]: row["memo"] for row in status["trials"]}
    assert [n for n, m in memos.items() if m.startswith("best")] == [best]
    assert memos[best].startswith(f"best (by {rule})")
    assert [n for n, m in memos.items() if "reference" in m] == [ref]
    assert {row["reference_trial"] for row in status["trials"] if row["diff_vs_reference"] is not None} == {ref}
    # the parent run: tags and description
    client = MlflowClient(session.file.tracking_uri)
    parent = client.get_run(session.study.user_attrs["mlflow_parent_run_id"]).data.tags
    assert parent["losstune.best_trial"] == str(best) and parent["losstune.best_rule"] == rule
    assert parent["losstune.reference_trial"] == str(ref)
    assert (
        f"(trial {best}, phase {trials[best].user_attrs['phase']}, chosen by {rule})" in parent["mlflow.note.content"]
    )
    parent_id = session.study.user_attrs["mlflow_parent_run_id"]
    table = json.loads(Path(client.download_artifacts(parent_id, "results_table.json", str(tmp_path))).read_text())
    memo_col = table["columns"].index("memo")
    assert [r[0] for r in table["data"] if str(r[memo_col]).startswith("best")] == [best]
    # the report logged on the parent run, and losstune report
    logged = Path(client.download_artifacts(parent_id, "report.html", str(tmp_path))).read_text(encoding="utf-8")
    assert re.findall(r'<tr class="best[^"]*" data-trial="(\d+)"', logged) == [str(best)]
    assert main(["report", str(path), "-o", str(tmp_path / "report.html")]) == 0
    capsys.readouterr()
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert re.findall(r'<tr class="best[^"]*" data-trial="(\d+)"', page) == [str(best)]
    assert re.findall(r'<tr class="[^"]*reference" data-trial="(\d+)"', page) == [str(ref)]
    assert f"Best trial: t{best:03d}</b> (chosen by <b>{rule}</b>" in page
    # the report's summary is status's, line for line (the best trial, its estimate, ensemble, yardstick)
    summary = html.unescape(re.search(r'<pre id="summary">(.*?)</pre>', page, re.S).group(1)).splitlines()
    assert summary and summary[0].startswith(f"best: trial {best} (") and "\n".join(summary) in text
    logged_summary = html.unescape(re.search(r'<pre id="summary">(.*?)</pre>', logged, re.S).group(1))
    assert logged_summary.splitlines()[:3] == summary[:3]
    # export --by auto
    assert main(["export", str(path), "-o", str(tmp_path / "best.yaml")]) == 0
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["provenance"]["trial"] == best
    assert exported["provenance"]["selected_by"] == exported["provenance"]["confidence"]["selected_by"] == rule
    printed = capsys.readouterr().out
    assert "alpha=none" in printed and "alpha=None" not in printed


def test_a_phase_that_beat_nothing_says_the_earlier_choice_was_kept():
    from search.study.choices import phase_choices
    from search.study.phases import Phase
    from search.study.results import plan_trial_of

    trials = _week([0.58, 0.59, 0.58])  # the refine trial is worse than trial 1
    phases = (
        Phase(name="balance", grid=[{"bce_weight": 0.5, "focal_weight": 0.5}]),
        Phase(name="confirm", kind="confirm"),
        Phase(name="refine", kind="tpe", space={"gamma": (0.0, 5.0)}),
    )
    lines = phase_choices(phases, [plan_trial_of(t) for t in trials], LossConfig(**_loss(2, 0.5)))
    refine = next(line for line in lines if line.startswith("refine: "))
    assert refine.startswith("refine: kept g=2 a=none w=1/0 (trial 1, balance); the phase's best, ")
    assert "(trial 5)" in refine


def test_a_trial_line_shows_its_own_share_of_its_batch_time():
    from types import SimpleNamespace

    from search.run.trial_outcome import TrialOutcome, format_outcome

    result = SimpleNamespace(oof_score=0.6, honest_score_mean=0.58, threshold=0.4, seconds=12.0)
    line = format_outcome(
        TrialOutcome(3, "gamma", LossConfig(**_loss(3.0, 0.5)), "COMPLETE", result=result, batch_size=4), "f1"
    )
    assert "3.0s (1/4 of a 12.0s batch)" in line and "gamma=3 " in line


def test_a_drop_column_that_is_missing_names_the_study_file_key(tmp_path):
    from objectives.data import load_dataset
    from objectives.data_spec import DataSpec
    from objectives.errors import LosstuneError

    (tmp_path / "t.csv").write_text("a,y\n1,0\n2,1\n3,0\n4,1\n")
    with pytest.raises(LosstuneError, match=r"data\.drop in a study file, --drop on the command line"):
        load_dataset(DataSpec(path=tmp_path / "t.csv", target="y", drop=("customer_id",)))


def test_the_summary_says_when_trials_are_still_running_elsewhere():
    """A worker that ran nothing (another took the batch) names the best so far, and says so."""
    from search.study.week_summary import summary_lines

    quiet = {"metric": "f1", "best": None, "reference_trial": None, "ensemble": None, "baseline": None, "running": 0}
    assert summary_lines(quiet) == []
    sure = {"selected_by": "mean", "score": 0.5, "verdict": "is the reference", "verdict_text": "the reference"}
    sure |= {"estimate_basis": "honest", "n_trials": 1}
    best = {"trial": 0, "phase": "balance", "score": 0.5, "alpha": None, "gamma": 3.0, "bce_weight": 0.5}
    best |= {"focal_weight": 0.5, "confidence": sure}
    busy = summary_lines({**quiet, "running": 3, "reference_trial": 0, "best": best})
    assert busy[0].startswith("3 trial(s) still running (other workers") and busy[0].endswith("the best so far")
    assert busy[1].startswith("best: trial 0 (balance)") and busy[-1].startswith("reference: trial 0")
    assert summary_lines({**quiet, "running": 1})[0].endswith(": no complete trial yet")  # nothing follows
