"""A disk that refuses writes in the middle of a search (full, read-only): one line, exit status 2, the trial in
progress marked FAILED in Optuna, and no false warning that it could not be marked."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy.exc

from search.cli import main
from search.run.session import StudySession
from tests.conftest import tiny_study

WEEK = "2026-11-18T10:00:00"


def make_study(tmp_path: Path) -> Path:
    return tiny_study(tmp_path, "disk", budget=3, plan=None, rows=90, data_seed=4, epochs=1)


def trials(path: Path):
    return StudySession(path, with_data=False, create=False).study.trials


FAULTS = {
    "full disk": OSError(errno.ENOSPC, "No space left on device", "/srv/mlartifacts/1/abc/artifacts/curves.png"),
    "read-only": OSError(errno.EROFS, "Read-only file system", "/srv/mlartifacts/1/abc/artifacts/curves.png"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_artifact_write_refused_mid_search_is_one_line(tmp_path, monkeypatch, capsys, caplog, fault):
    from mlflow import MlflowClient

    monkeypatch.setenv("LOSSTUNE_NOW", WEEK)
    path = make_study(tmp_path)

    def refuse(self, *args, **kwargs):
        raise FAULTS[fault]

    monkeypatch.setattr(MlflowClient, "log_artifacts", refuse)
    with caplog.at_level(logging.WARNING):
        rc = main(["search", str(path), "--no-progress"])
    _out, err = capsys.readouterr()
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("losstune search: error: cannot write /srv/mlartifacts/")
    assert FAULTS[fault].strerror in err
    assert "could not mark" not in caplog.text + err  # it was marked: no false warning
    # the whole batch was being recorded: every trial of it is marked, none left RUNNING
    assert trials(path) and all(t.state.name == "FAIL" and t.user_attrs["failure"] == "error" for t in trials(path))


def test_database_full_mid_search_is_one_line(tmp_path, monkeypatch, capsys, caplog):
    from search.tracking.tracker import StudyTracker

    monkeypatch.setenv("LOSSTUNE_NOW", WEEK)
    path = make_study(tmp_path)
    full = sqlalchemy.exc.OperationalError(
        "INSERT INTO metrics ...", {}, sqlite3.OperationalError("database or disk is full")
    )

    def refuse(self, *args, **kwargs):
        raise full

    monkeypatch.setattr(StudyTracker, "log_study_summary", refuse)
    with caplog.at_level(logging.WARNING):
        rc = main(["search", str(path), "--no-progress"])
    _out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1
    assert "cannot write to a database: database or disk is full" in err
    assert "could not mark" not in caplog.text
    assert trials(path)[0].state.name == "COMPLETE"  # told before the summary failed: kept


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only faults of the disk become one line: anything else is a bug and must stay visible."""
    from search.tracking.tracker import StudyTracker

    monkeypatch.setenv("LOSSTUNE_NOW", WEEK)
    path = make_study(tmp_path)
    monkeypatch.setattr(StudyTracker, "log_study_summary", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["search", str(path), "--no-progress"])


def _mount_tmpfs(where: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
        ).returncode
        == 0
    )


def test_a_really_full_artifact_disk(tmp_path):
    """A small tmpfs as the artifact directory, filled before the first trial logs its reports."""
    path = make_study(tmp_path)
    artifacts = tmp_path / "mlartifacts"
    artifacts.mkdir()
    if not _mount_tmpfs(artifacts, "256k"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        try:
            with open(artifacts / "filler", "wb") as fh:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        env = dict(os.environ, LOSSTUNE_NOW=WEEK, OMP_NUM_THREADS="1")
        env.pop("LOSSTUNE_TRACKING_URI", None)
        proc = subprocess.run(
            [sys.executable, "-m", "search.cli", "search", str(path), "--no-progress"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and "could not mark" not in proc.stderr
        assert trials(path) and all(t.state.name == "FAIL" for t in trials(path))  # the whole batch, marked
    finally:
        subprocess.run(["umount", str(artifacts)], check=False)
