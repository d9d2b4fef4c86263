"""The week's trials as one model, through the study: stored OOF files, the pairing key, the ensemble row in
status / status --json / the parent run, and export --by ensemble -> train -> predict (and the pyfunc model)."""

from __future__ import annotations

import json
import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from objectives.config import LossConfig
from objectives.errors import LosstuneError
from search.cli import main
from search.model.exported_config import load_exported
from search.model.model_dir_loading import load_model_dir
from search.study.choices import paired
from search.study.oof_store import OOFMismatch, load_oof_set, oof_dir, read_trial_oof, write_trial_oof
from search.study.steps import PlanTrial
from tests.conftest import synthetic_frame

STUDY = """\
name: ens
data: {path: train.csv, target: label, positive: "yes"}
cv: {folds: 3, seed: 0}
model: {hidden: [16], dropout: 0.0}
train: {epochs: 6, batch_size: 64, lr: 0.01, device: cpu}
budget: {trials_per_week: 4}
"""


def _record(n, seed=0, folds=5, repeats=1, data="sha256:a", scores=(0.5, 0.6, 0.55, 0.52, 0.58)):
    loss = LossConfig(gamma=2.0)
    return PlanTrial(
        n, "p", "COMPLETE", loss, value=0.6, cv_seed=seed, fold_scores=scores, folds=folds, repeats=repeats,
        fingerprint=data,
    )  # fmt: skip


def test_the_pairing_key_holds_seed_folds_repeats_and_data():
    a = _record(0)
    assert paired(_record(1), a) is not None
    for other in (_record(1, seed=1), _record(1, repeats=2), _record(1, data="sha256:b")):
        assert other.cv_key != a.cv_key and paired(other, a) is None
    assert _record(1, folds=4, scores=(0.5, 0.6, 0.55, 0.52)).cv_key != a.cv_key


def test_oof_files_round_trip_and_refuse_what_cannot_be_paired(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(50) < 0.3).astype(int)
    fold = np.arange(50) % 5
    p = rng.random((2, 50))
    path = write_trial_oof(tmp_path, 3, p, np.stack([fold, fold]), y, 7, "sha256:a")
    stored = read_trial_oof(path)
    assert stored.proba.dtype == np.float32 and stored.proba.shape == (2, 50)
    np.testing.assert_allclose(stored.proba, p, rtol=1e-7)
    assert stored.y.tolist() == y.tolist() and stored.fold[1].tolist() == fold.tolist()
    rec = _record(3, seed=7, repeats=2)
    assert stored.key == rec.cv_key
    write_trial_oof(tmp_path, 4, p, np.stack([fold, fold]), y, 7, "sha256:a")
    write_trial_oof(tmp_path, 5, p[:1], fold, y, 7, "sha256:a")  # one repeat: other splits, left out
    got = load_oof_set(tmp_path, [rec, _record(4, seed=7, repeats=2), _record(5, seed=7)], key=rec.cv_key)
    assert got is not None and got.trials == (3, 4) and got.proba.shape == (2, 2, 50)
    write_trial_oof(tmp_path, 6, p, np.stack([fold, fold]), 1 - y, 7, "sha256:a")  # same key, other labels
    with pytest.raises(OOFMismatch):
        load_oof_set(tmp_path, [rec, _record(6, seed=7, repeats=2)], key=rec.cv_key)
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def cli(*argv) -> str:
    buf = StringIO()
    with redirect_stdout(buf):
        rc = main([str(a) for a in argv])
    assert rc == 0, (argv, buf.getvalue())
    return buf.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ens")
    frame = synthetic_frame(n=600, seed=3, missing=True)
    frame.iloc[:480].to_csv(root / "train.csv", index=False)
    frame.iloc[480:].drop(columns=["label"]).to_csv(root / "test.csv", index=False)
    (root / "study.yaml").write_text(STUDY)
    out = {"root": root, "search": cli("search", root / "study.yaml", "--no-progress")}
    return out


@pytest.mark.slow
def test_a_search_keeps_every_trials_oof_and_shows_the_ensemble(study):
    root = study["root"]
    files = sorted(oof_dir(root, "ens").glob("t*.npz"))
    assert len(files) == 4
    assert "ensemble of" in study["search"] and "estimate for unseen data" in study["search"]
    status = json.loads(cli("status", root / "study.yaml", "--json"))
    e = status["ensemble"]
    assert e["pool"] == [0, 1, 2, 3] and abs(sum(e["weights"]) - 1) < 1e-9
    assert e["oof_score"] >= max(t["cv_score"] for t in status["trials"]) - 1e-6  # never below the best single
    assert e["estimate_low"] <= e["estimate"] <= e["estimate_high"]
    text = cli("status", root / "study.yaml")
    # the best trial's lines carry the corrected estimate the ensemble line compares with, in search and status
    corrected = f"corrected for choosing among 4 trials: f1 {e['single_estimate']:.4f} (BBC-CV"
    same_best = e["best_trial"] == status["best"]["trial"]
    assert (corrected in text) == same_best and (corrected in study["search"]) == same_best, text
    assert f"the best single trial t{e['best_trial']}: {e['single_estimate']:.4f} by the same estimator" in text
    row = next(line for line in text.splitlines() if line.split()[:2] == ["ensemble", "ensemble"])
    assert "ENSEMBLE" in row and f"{e['oof_score']:.4f} ± {e['oof_se']:.4f}" in row
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ens").experiment_id])
    parent = next(r for r in runs if "losstune.ensemble" in r.data.tags)
    assert parent.data.metrics["ensemble_cv_score"] == pytest.approx(e["oof_score"])
    # the ensemble's row in the results table is no trial: the parent run's note counts the four trials
    assert parent.data.tags["mlflow.note.content"].startswith("**4 trial(s)**: 4 complete, 0 failed.")
    table = json.loads((Path(client.download_artifacts(parent.info.run_id, "results_table.json"))).read_text())
    assert any(row[0] == "ensemble" for row in table["data"])
    trial_run = next(r for r in runs if r.data.tags.get("losstune.trial") == "0")
    assert [a.path for a in client.list_artifacts(trial_run.info.run_id, "oof")] == ["oof/t00000.npz"]


@pytest.mark.slow
def test_export_train_predict_an_ensemble(study):
    root = study["root"]
    said = cli("export", root / "study.yaml", "--by", "ensemble", "-o", root / "ens.yaml")
    exported = load_exported(root / "ens.yaml")
    e = exported.ensemble
    assert e is not None and exported.provenance.selected_by == "ensemble"
    n = len(e.members)
    assert f"exported the ensemble of {n} trial{'s' if n > 1 else ''} of study 'ens'" in said, said
    # evaluate --config reruns the lead member alone: its score is not the ensemble's, and no stack is blamed
    assert "not the same figures" not in cli("evaluate", "--config", root / "ens.yaml", "--epochs", "1")
    assert "not the same figures" not in cli("evaluate", "--config", root / "ens.yaml")
    edited = root / "ens_other_score.yaml"  # an ensemble scoring above its lead member alone
    edited.write_text(re.sub(r"(?m)^  cv_score: .*", "  cv_score: 0.999", (root / "ens.yaml").read_text()))
    assert "not the same figures" not in cli("evaluate", "--config", edited)
    assert {m.seed for m in e.members} == {exported.cv.seed}  # each member as its trial alone would be trained
    cli("train", root / "ens.yaml", "-o", root / "model", "--no-track")
    model = load_model_dir(root / "model")
    test = pd.read_csv(root / "test.csv")
    out = model.predict(test)
    members = model.final.members  # type: ignore[attr-defined]
    assert len(members) == len(e.members)
    checked = model.check(test).features
    by_hand = sum(m.weight * f.predict_proba(checked) for m, f in zip(e.members, members))
    np.testing.assert_allclose(out["proba"], by_hand, rtol=1e-12)
    assert (out["label"] == (out["proba"] >= exported.threshold)).all()
    import mlflow.pyfunc

    served = mlflow.pyfunc.load_model(str(root / "model")).predict(test)
    np.testing.assert_allclose(served["proba"], out["proba"], rtol=1e-12)
    cli("predict", root / "model", root / "test.csv", "-o", root / "pred.csv", "--proba")
    assert len(pd.read_csv(root / "pred.csv")) == len(test)


def test_export_by_ensemble_needs_stored_oof(tmp_path):
    from search.model.export_ensemble import export_ensemble

    (tmp_path / "s.yaml").write_text(STUDY.replace("train.csv", str(tmp_path / "none.csv")))
    with pytest.raises(LosstuneError):
        export_ensemble(tmp_path / "s.yaml", tmp_path / "e.yaml", log_to_mlflow=False)


@pytest.mark.slow
def test_a_summary_reads_the_kept_ensemble_and_never_computes_a_stale_one(study, tmp_path):
    """search's closing summary asks with compute_stale=False: the kept ensemble, or None with nothing written
    (computing there would run outside the search's storage-fault handling)."""
    from search.run.session import StudySession
    from search.study.results import plan_trials
    from search.study.study_ensemble import CACHE, study_ensemble

    session = StudySession(study["root"] / "study.yaml", with_data=False, create=False)
    records = plan_trials(session.study)
    cache = oof_dir(study["root"], "ens") / CACHE
    kept = study_ensemble(records, session.file, compute_stale=False)
    assert kept is not None and kept.to_dict() == json.loads(cache.read_text())["ensemble"]
    saved = cache.read_bytes()
    cache.unlink()
    try:
        assert study_ensemble(records, session.file, compute_stale=False) is None and not cache.exists()
        # the report opens the study read-only: without a kept ensemble it shows none and writes none
        page = cli("report", study["root"] / "study.yaml", "-o", tmp_path / "report.html")
        assert "wrote" in page and not cache.exists()
        assert "ensemble of" not in (tmp_path / "report.html").read_text(encoding="utf-8")
    finally:
        cache.write_bytes(saved)


@pytest.mark.slow
def test_status_answers_when_the_ensemble_cannot_be_kept(study, monkeypatch, caplog):
    """A study directory this user may only read: status computes the ensemble, shows it, and warns that it is
    not kept (the real refusal is atomic_write's one line; root cannot be refused a write, so it is simulated)."""
    import search.study.study_ensemble as study_ensemble_module
    from search.study.study_ensemble import CACHE

    cache = oof_dir(study["root"], "ens") / CACHE
    saved = cache.read_bytes()
    cache.unlink()

    def refused(out, text, **kw):
        raise LosstuneError(f"cannot write {out}: directory {out.parent} is not writable")

    monkeypatch.setattr(study_ensemble_module, "write_text_atomic", refused)
    try:
        with caplog.at_level("WARNING", logger="search.study.study_ensemble"):
            text = cli("status", study["root"] / "study.yaml")
        assert "ensemble of" in text and not cache.exists()
        assert any("the week's ensemble is not kept (cannot write" in r.getMessage() for r in caplog.records)
    finally:
        cache.write_bytes(saved)


@pytest.mark.slow
def test_no_ensemble_where_the_oof_store_is_not_says_where_it_looked(study, capsys):
    """Another machine of a team (no shared study directory) has no OOF store: export --by ensemble names the
    directory it read and what to do, in one line."""
    store = oof_dir(study["root"], "ens")
    elsewhere = store.with_name("ens.oof.elsewhere")
    store.rename(elsewhere)
    try:
        rc = main(
            ["export", str(study["root"] / "study.yaml"), "--by", "ensemble", "-o", str(study["root"] / "x.yaml")]
        )
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and f"stored OOF predictions in {store} " in err, err
        assert "export on the machine that ran the trials" in err and not (study["root"] / "x.yaml").exists()
    finally:
        elsewhere.rename(store)


@pytest.mark.slow
def test_search_shows_the_ensemble_it_made_even_when_it_cannot_keep_it(tmp_path, monkeypatch, caplog):
    """The closing summary shows the ensemble this search made and logged, not the kept file (which a failed
    write, or another machine, may have left missing or different)."""
    import search.study.study_ensemble as study_ensemble_module
    from tests.conftest import tiny_study

    def refused(out, text, **kw):
        raise LosstuneError(f"cannot write {out}: no space left on device; {out} is unchanged")

    monkeypatch.setattr(study_ensemble_module, "write_text_atomic", refused)
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    path = tiny_study(tmp_path, "unkept", budget=4)
    with caplog.at_level("WARNING", logger="search.study.study_ensemble"):
        out = cli("search", path, "--no-progress")
    summary = out[out.index("best: trial") :]
    assert "ensemble of " in summary and "baseline gradient boosting" in summary, out
    assert any("the week's ensemble is not kept" in r.getMessage() for r in caplog.records)
