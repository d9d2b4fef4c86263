"""The MLflow UI in a real browser: headless Chromium (Debian's ``chromium`` package) against ``mlflow ui`` on a
tiny study's stores. Screenshots of the runs table and the compare view go to the test's tmp directory; the
compare view's page must show every loss parameter and ``cv_score`` as a number for every trial.

Skips, with the reason, where Chromium is not installed; under ``CI=true`` it fails instead (``.ci/run``
installs Chromium). Slow: ``make test-fast`` leaves it out.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from search.run.options import SearchOptions
from search.run.runner import run_search
from search.tracking.run_params import LOSS_PARAM_NAMES
from tests.conftest import tiny_study

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PLAN = """\
  - name: p
    fixed: {gamma: 2}
    # two weighted trials and an unweighted one (alpha: null, the base), which used to be logged as "None"
    grid: [{alpha: 0.25}, {alpha: 0.75}, {bce_weight: 0.2, focal_weight: 0.8}]
"""


def _browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        reason = "no Chromium (apt-get install chromium): the MLflow UI browser test cannot run"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; .ci/run installs it")
        pytest.skip(reason)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page(browser: str, url: str, screenshot: Path) -> str:
    """The page's DOM after its scripts ran (and a screenshot of it), as text without tags."""
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=2200,1400",
        "--virtual-time-budget=30000",
    ]
    subprocess.run([*args, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=True)
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=True).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


@pytest.fixture
def ui_server(tmp_path, monkeypatch):
    """A searched tiny study (3 trials) and ``mlflow ui`` serving its store: (base URL, experiment id, runs)."""
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    tiny_study(tmp_path, "ui", budget=3, plan=PLAN, rows=150, data_seed=2, model="{hidden: [8]}")
    lines: list[str] = []
    assert run_search(tmp_path / "ui.yaml", SearchOptions(progress=False), echo=lines.append) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ui").experiment_id
    trials = client.search_runs([experiment], "tags.`losstune.role` = 'trial'")
    assert len(trials) == 3
    assert any(f"/#/experiments/{experiment}/runs" in line for line in lines)  # the URL the search printed

    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    log = (tmp_path / "mlflow-ui.log").open("w")
    server = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "mlflow-ui.log").read_text()
            assert time.monotonic() < deadline, "mlflow ui did not answer within 120 s"
            time.sleep(0.5)
        yield base, experiment, trials
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def artifact_dir(tmp_path: Path) -> Path:
    """Where a browser test keeps its screenshots: ``$LOSSTUNE_TEST_ARTIFACTS`` (``.ci/run`` sets it, so that CI
    keeps them), else the test's tmp directory."""
    where = os.environ.get("LOSSTUNE_TEST_ARTIFACTS")
    if not where:
        return tmp_path
    path = Path(where).absolute()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.slow
def test_the_printed_address_opens_the_trials_with_score_se_and_verdict(ui_server, tmp_path):
    """The address ``losstune search`` prints opens the study's shared view: the trials listed flat (not folded
    under the parent run), sorted by cv_score, with its SE and the verdict (text) in view."""
    browser = _browser()
    base, experiment, trials = ui_server
    shot = artifact_dir(tmp_path) / "trials_view.png"
    page = _page(
        browser,
        f"{base}/#/experiments/{experiment}/runs?viewStateShareKey=losstune&workflowType=machine_learning",
        shot,
    )
    assert shot.stat().st_size > 10_000
    assert "share key is invalid" not in page and "does not exist" not in page, page[:2000]
    for column in ("cv_score", "cv_score_se", "losstune.verdict"):
        assert column in page, f"{column} not in view: {page[:3000]}"
    names = [r.info.run_name for r in trials]
    assert all(name in page for name in names), page[:3000]  # every trial shown: none folded under the parent
    verdicts = {r.data.tags["losstune.verdict"] for r in trials}
    assert "reference" in verdicts and all(v in page for v in verdicts), (verdicts, page[:3000])
    assert "Model training" in page and "Judges" not in page and "Sessions" not in page  # not the GenAI sidebar
    # sorted by cv_score, best first
    best_first = sorted(trials, key=lambda r: -r.data.metrics["cv_score"])
    assert [page.index(r.info.run_name) for r in best_first] == sorted(page.index(n) for n in names)


@pytest.mark.slow
def test_runs_table_and_compare_view_show_numbers_for_every_trial(ui_server, tmp_path):
    browser = _browser()
    base, experiment, trials = ui_server

    shots = artifact_dir(tmp_path)
    runs_page = _page(browser, f"{base}/#/experiments/{experiment}/runs", shots / "runs_table.png")
    assert (shots / "runs_table.png").stat().st_size > 10_000
    # the experiment opens on its training runs (not MLflow 3's GenAI overview), the study's parent run listed
    assert "Training runs" in runs_page and "No data available" not in runs_page
    assert re.search(r"\b\d+ matching runs\b", runs_page), runs_page[:2000]

    ids = urllib.parse.quote(json.dumps([r.info.run_id for r in trials]))
    compare = _page(
        browser, f"{base}/#/compare-runs?runs={ids}&experiments=%5B%22{experiment}%22%5D", shots / "compare_view.png"
    )
    assert (shots / "compare_view.png").stat().st_size > 10_000
    assert f"Comparing {len(trials)} Runs" in compare, compare[:2000]
    for run in trials:  # the names tell the trials apart from their first characters
        assert run.info.run_name in compare and re.match(r"t\d{3} g=", run.info.run_name)

    # the parameters table: one row per param, one value per trial; every loss param a number in every column
    params = compare[compare.index("Parameters Show diff only") : compare.index("Metrics Show diff only")]
    n = len(trials)
    for name in LOSS_PARAM_NAMES:
        row = re.search(rf"\b{name} ((?:\S+ ){{{n}}})", params + " ")
        assert row, f"no row {name} in the compare view: {params}"
        values = row.group(1).split()
        assert all(re.fullmatch(NUMBER, v) for v in values), f"{name}: {values} (not all numbers)"
    unweighted = [r for r in trials if r.data.params["alpha_pos"] == "1.0"]
    assert len(unweighted) == 1 and unweighted[0].data.params["alpha_neg"] == "1.0"

    # the metrics table lists the metric names, then their values row by row: cv_score (the first) for every trial
    metrics = compare[compare.index("Metrics Show diff only") + len("Metrics Show diff only") :]
    names = metrics.split(" Artifacts ")[0].split()
    first_number = next(i for i, tok in enumerate(names) if re.fullmatch(NUMBER, tok))
    metric_names, values = names[:first_number], names[first_number:]
    assert metric_names[0] == "cv_score" and len(values) == len(metric_names) * n, (metric_names, values)
    shown = [float(v) for v in values[:n]]
    expected = sorted(round(r.data.metrics["cv_score"], 3) for r in trials)
    assert sorted(shown) == pytest.approx(expected, abs=1e-3)
    # a param and a metric never share a name (the axis pickers would show two identical entries)
    param_names = set(re.findall(r"\b([a-z_]+) (?=\S)", params))
    assert not {"precision", "threshold"} & param_names
