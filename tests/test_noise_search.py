"""Scores with their noise through a whole search: the same numbers in the trial's user attrs, the MLflow
metrics, the results table, ``status --json`` and the exported file; the confirm phase on fresh seeds."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from objectives.config import LossConfig
from objectives.errors import LosstuneError
from objectives.stats import compare, corrected_se
from search.cli import main
from search.run.session import StudySession
from search.study.loss_point import loss_point
from search.study.phases import Phase
from search.study.plan import FRESH_SEED_STRIDE, config_key, next_step
from search.study.results import plan_trials
from search.study.study_file import load_study_file
from tests.conftest import tiny_study

PLAN = """\
  - name: balance
    fixed: {gamma: 2, alpha: null}
    grid: [{bce_weight: 0.5, focal_weight: 0.5}, {bce_weight: 1.0, focal_weight: 0.0},
           {bce_weight: 0.2, focal_weight: 0.8}]
  - name: check
    kind: confirm
    top: 2
    repeats: 2
  - name: refine
    kind: tpe
    space: {gamma: [0.0, 4.0]}
"""


def make_study(tmp_path: Path, name: str = "nz", budget: int = 6, extra: str = "") -> Path:
    return tiny_study(tmp_path, name, budget=budget, plan=PLAN, extra=extra, cv_seed=7, epochs=3)


@pytest.fixture
def searched(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    path = make_study(tmp_path)
    assert main(["search", str(path), "--no-progress"]) == 0
    return path, capsys.readouterr().out


def test_same_numbers_everywhere(searched, tmp_path, capsys):
    path, out = searched
    session = StudySession(path, with_data=False)
    trials = session.study.get_trials(deepcopy=False)
    check = [t for t in trials if t.user_attrs["phase"] == "check"]
    assert [t.user_attrs["phase"] for t in trials[: 3 + len(check)]] == ["balance"] * 3 + ["check"] * len(check)
    assert len(check) in (2, 3)  # the reference, and the two best (one of which may be the reference)
    client = MlflowClient(session.file.tracking_uri)

    assert main(["status", str(path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    rows = {row["trial"]: row for row in status["trials"]}
    for t in trials:
        a = t.user_attrs
        # the stored fold scores give the stored SE, and the CLI line shows it
        assert a["cv_score_se"] == pytest.approx(corrected_se(a["fold_scores"], 3))
        assert f"{t.value:.4f} ± {a['cv_score_se']:.4f}" in out
        run = client.get_run(a["mlflow_run_id"]).data
        metrics = run.metrics
        # the run's params say which splits: a confirm trial's own seed and repeats, not the study's
        assert (run.params["seed"], run.params["repeats"]) == (
            (str(FRESH_SEED_STRIDE), "2") if a["phase"] == "check" else ("7", "1")
        )
        row = rows[t.number]
        for key in (
            "cv_score_se",
            "honest_score_se",
            "diff_vs_reference",
            "diff_vs_reference_se",
            "diff_vs_best",
            "diff_vs_best_se",
        ):
            if a[key] is None:
                assert key not in metrics and (row[key] is None or math.isnan(row[key]))  # JSON null or NaN
            else:
                assert metrics[key] == a[key] == row[key]
        assert metrics["cv_score"] == row["cv_score"] == t.value
        # each repeat's score is a step of cv_score_repeat (one metric every trial has: no NaN columns in the UI)
        history = sorted(client.get_metric_history(a["mlflow_run_id"], "cv_score_repeat"), key=lambda m: m.step)
        assert [m.value for m in history] == pytest.approx(a["repeat_scores"])
        assert [m.step for m in history] == list(range(a["repeats"]))
        assert not any(k.startswith("cv_score_r") and k[-1].isdigit() for k in metrics)
        # the verdict as text, against the study's one reference
        verdict = run.tags["losstune.verdict"]
        if config_key(loss_point(a["loss"])) == config_key(
            session.file.reference_loss
        ):  # the reference, or its confirm re-run
            assert verdict == "reference"
        else:
            assert re.fullmatch(r"(better than|~same as|worse than) t000", verdict), verdict
        assert t.value == pytest.approx(sum(a["repeat_scores"]) / a["repeats"])  # the mean of its repeats
        if t.user_attrs["phase"] == "check":
            assert a["repeats"] == 2  # the confirm phase's repeats really ran
        verdict = row["verdict_vs_reference"]
        assert (None if isinstance(verdict, float) and math.isnan(verdict) else verdict) == a["verdict_vs_reference"]

    # paired differences really are fold by fold against the reference on the same splits
    ref = trials[0]
    assert config_key(loss_point(ref.user_attrs["loss"])) == config_key(session.file.reference_loss)
    for t in trials[1:3]:
        c = compare(t.user_attrs["fold_scores"], ref.user_attrs["fold_scores"], 3, diff=t.value - ref.value)
        assert (t.user_attrs["reference_trial"], t.user_attrs["diff_vs_reference_se"]) == (0, pytest.approx(c.se))
        assert t.user_attrs["verdict_vs_reference"] == c.verdict

    # export: the default rule takes the confirmed best; its provenance carries the same numbers as status
    assert main(["export", str(path), "-o", str(tmp_path / "best.yaml")]) == 0
    printed = capsys.readouterr().out
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    conf = exported["provenance"]["confidence"]
    assert conf == status["best"]["confidence"]
    chosen = trials[exported["provenance"]["trial"]]
    assert chosen.user_attrs["phase"] == "check" and conf["selected_by"] == "confirmed"
    assert chosen.value == max(t.value for t in check)
    assert (conf["score"], conf["score_se"]) == (chosen.value, chosen.user_attrs["cv_score_se"])
    assert conf["estimate"] == chosen.user_attrs["honest_score"]
    assert exported["cv"]["seed"] == chosen.user_attrs["cv_seed"] == FRESH_SEED_STRIDE
    assert conf["verdict"] in ("better", "worse", "not distinguishable", "is the reference")
    assert conf["verdict_text"] in printed

    # --by mean keeps the study's own splits
    assert main(["export", str(path), "--by", "mean", "-o", str(tmp_path / "mean.yaml")]) == 0
    capsys.readouterr()
    mean = yaml.safe_load((tmp_path / "mean.yaml").read_text())
    assert mean["provenance"]["trial"] == max(trials[:3], key=lambda t: (t.value, -t.number)).number
    assert mean["cv"]["seed"] == 7

    # the plan's choices are on the parent run
    parent = session.study.user_attrs["mlflow_parent_run_id"]
    notes = client.get_run(parent).data.tags["losstune.plan_choices"]
    assert notes.splitlines() == status["choices"]
    assert notes.startswith("balance: ") and "\ncheck: " in notes


def test_confirm_reruns_the_top_configurations_on_seeds_no_earlier_trial_used(searched):
    path, _ = searched
    records = plan_trials(StudySession(path, with_data=False).study)
    balance, check = records[:3], [r for r in records if r.phase == "check"]
    top2 = [config_key(r.loss) for r in sorted(balance, key=lambda r: (-r.value, r.number))[:2]]
    reference = config_key(LossConfig(gamma=2.0))
    assert [config_key(r.loss) for r in check] == list(dict.fromkeys([reference, *top2]))
    assert {r.cv_seed for r in balance} == {7}
    assert {r.cv_seed for r in check} == {FRESH_SEED_STRIDE}
    assert all(r.cv == {"folds": 3, "seed": FRESH_SEED_STRIDE, "repeats": 2} for r in check)
    # other splits: no confirm trial's folds equal those of the same configuration on the study's seed
    for r in check:
        same = [b for b in balance if config_key(b.loss) == config_key(r.loss)]
        assert all(b.fold_scores[: len(r.fold_scores)] != r.fold_scores for b in same)


def test_a_second_confirm_phase_takes_a_new_block_of_seeds():
    from search.study.plan import PlanTrial

    def rec(n, phase, seed, cv=None, value=0.5):
        loss = LossConfig(gamma=2.0, bce_weight=0.5, focal_weight=0.5 + n / 100)
        return PlanTrial(n, phase, "COMPLETE", loss, value=value, cv=cv, cv_seed=seed)

    grid = Phase(name="g", grid=[{"bce_weight": 0.5, "focal_weight": 0.5 + n / 100} for n in range(3)])
    phases = (
        grid,
        Phase(name="c1", kind="confirm", top=1),
        Phase(name="g2", grid=[{"gamma": 3.0}]),
        Phase(name="c2", kind="confirm", top=1, with_reference=False),
    )
    done = [rec(0, "g", 5), rec(1, "g", 5, value=0.9), rec(2, "g", 5)]
    step = next_step(phases, done, study_seed=5)
    assert (step.phase.name, step.cv) == ("c1", {"seed": 1000, "repeats": 3})
    assert step.loss.focal_weight == 0.5  # the reference first
    done += [
        PlanTrial(n, "c1", "COMPLETE", done[i].loss, value=0.8, cv={"seed": 1000}, cv_seed=1000)
        for n, i in ((3, 0), (4, 1))
    ]  # the reference (trial 0's configuration) and the best (trial 1's)
    step = next_step(phases, done, study_seed=5)
    assert step.phase.name == "g2"
    done.append(PlanTrial(5, "g2", "COMPLETE", LossConfig(gamma=3.0, focal_weight=0.51), value=0.95, cv_seed=5))
    step = next_step(phases, done, study_seed=5)
    assert (step.phase.name, step.cv["seed"], step.loss.gamma) == ("c2", 2000, 3.0)


def test_reference_and_confirm_phase_are_validated(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    path = make_study(tmp_path, name="ref", extra="reference: {gamma: 1, bce_weight: 1.0, focal_weight: 0.0}")
    file = load_study_file(path)
    assert file.reference_loss == LossConfig(alpha=None, gamma=1.0, bce_weight=1.0, focal_weight=0.0)
    for extra, message in [
        ("reference: {gamma: -1}", "gamma=-1 is outside"),
        ("reference: {bce_weight: 0, focal_weight: 0}", "both 0"),
        ("reference: {gama: 1}", "gama"),
    ]:
        bad = make_study(tmp_path, name="bad", extra=extra)
        with pytest.raises(LosstuneError, match=message):
            load_study_file(bad)
    for phase, message in [
        ({"name": "c", "kind": "confirm", "grid": [{"gamma": 1}]}, "takes only"),
        ({"name": "c", "grid": [{"gamma": 1}], "top": 2}, "belong to a confirm phase"),
        ({"name": "c", "kind": "confirm", "top": 0}, "top"),
        ({"name": "c", "kind": "tpe", "sampler": "tpe", "space": {"gamma": [0, 1]}}, "sampler"),
    ]:
        with pytest.raises(Exception, match=message):
            Phase(**phase)
    text = (
        make_study(tmp_path, name="first").read_text().replace("plan:\n", "plan:\n  - {name: early, kind: confirm}\n")
    )
    (tmp_path / "first.yaml").write_text(text)
    assert main(["status", str(tmp_path / "first.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs earlier phases" in err


def test_verdict_defaults_without_a_confirm_phase(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    path = make_study(tmp_path, name="early", budget=2)
    assert main(["search", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["export", str(path), "--by", "confirmed", "-o", str(tmp_path / "c.yaml")]) == 2
    assert "no confirm-phase trial" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists()
    assert main(["status", str(path)]) == 0
    text = capsys.readouterr().out
    assert "(OOF, by mean)" in text and "best of 2 trials" in text
    assert math.isfinite(float(text.split(" ± ")[1].split()[0]))
