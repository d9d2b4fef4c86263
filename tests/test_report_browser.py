"""The study report (``losstune report``) in headless Chromium: what it shows, that it needs no network, and that
Japanese column names come through. The screenshot is kept (``$LOSSTUNE_TEST_ARTIFACTS`` or the tmp directory).
Skips without Chromium, fails under ``CI=true`` (``.ci/run`` installs it). Slow: ``make test-fast`` leaves it out."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from search.cli import main
from search.run.session import StudySession
from search.study.ranking import choose
from tests.conftest import tiny_study
from tests.test_mlflow_browser import _browser, _page, artifact_dir

PLAN = """\
  - name: balance
    fixed: {gamma: 2, alpha: null}
    grid: [{bce_weight: 0.5, focal_weight: 0.5}, {bce_weight: 1.0, focal_weight: 0.0},
           {bce_weight: 0.2, focal_weight: 0.8}]
"""


@pytest.mark.slow
def test_report_in_a_browser(tmp_path, monkeypatch, capsys):
    browser = _browser()
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    path = tiny_study(tmp_path, "rep", budget=3, plan=PLAN, epochs=4, rows=150)
    frame = pd.read_csv(tmp_path / "data.csv").rename(columns={"num1": "年齢", "color": "契約種別"})
    frame.to_csv(tmp_path / "data.csv", index=False)
    assert main(["search", str(path), "--no-progress"]) == 0
    assert main(["report", str(path), "-o", str(tmp_path / "report.html")]) == 0
    capsys.readouterr()
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    # self-contained: nothing is fetched (no script at all, no remote or relative resource)
    assert "<script" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", html), "the report refers to an outside file"

    shot = artifact_dir(tmp_path) / "study_report.png"
    page = _page(browser, (tmp_path / "report.html").as_uri(), shot)
    assert shot.stat().st_size > 20_000
    session = StudySession(path, with_data=False)
    trials = session.study.get_trials(deepcopy=False)
    best = choose(trials)
    assert best is not None
    assert f"Best trial: t{best.number:03d} (chosen by mean" in page
    for t in trials:  # every trial in the record table with its score and SE
        assert f"{t.value:.4f} ± {t.user_attrs['cv_score_se']:.4f}" in page
    assert f"t{best.number:03d} ★" in page
    assert "年齢" in page and "契約種別" in page  # the data's Japanese column names
    assert "within noise" in page and re.search(r"balance .* (yes|no|n/a)", page)
    assert f"threshold {trials[best.number].user_attrs['threshold']:.4f}" in page
    # the charts: one dot per trial, the learning curves and the logged PR / F1 figures of the best and reference
    assert len(re.findall(r'<circle cx="[\d.]+" cy="[\d.]+" r="4"', html)) == len(trials)
    roles = {best.number, 0}
    assert html.count('class="learning"') == len(roles)
    assert html.count('class="threshold-curves"') == len(roles)
    assert "No learning curves stored" not in page and "No precision-recall curve stored" not in page
