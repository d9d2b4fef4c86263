"""``status --json`` and ``evaluate --json`` are strict JSON: a missing score is ``null``, never ``NaN``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from search.formats.strict_json import dumps, strict_jsonable
from tests.conftest import tiny_study


def strict_loads(text: str):
    """``json.loads`` as a strict parser (JavaScript's ``JSON.parse``) reads it: NaN and Infinity are errors."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_become_null_at_any_depth():
    value = {"a": float("nan"), "b": [1.0, float("inf"), (np.float32("nan"), -np.inf)], "c": {"d": np.float64(2.5)}}
    assert strict_jsonable(value) == {"a": None, "b": [1.0, None, [None, None]], "c": {"d": 2.5}}
    assert strict_loads(dumps(value)) == {"a": None, "b": [1.0, None, [None, None]], "c": {"d": 2.5}}
    assert strict_loads(dumps({"n": np.int64(3), "x": np.float32(0.5)})) == {"n": 3, "x": 0.5}


def test_the_strict_parser_of_these_tests_does_reject_nan():
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"x": math.nan}))


PLAN = """\
  - name: a
    fixed: {gamma: 2}
    grid: [{alpha: 1.0}]
  - name: p
    # over phase a's alpha=1, this point is refused when it runs (no BCE: the negatives get no loss): a FAIL trial
    grid: [{bce_weight: 0.0, focal_weight: 1.0}]
"""


def test_status_json_of_a_study_with_a_failed_trial_is_strict_json(tmp_path, monkeypatch, capsys):
    from search.cli import main

    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-18T10:00:00")
    tiny_study(tmp_path, "sj", budget=2, plan=PLAN, rows=150, data_seed=1, model="{hidden: [8]}")
    assert main(["search", str(tmp_path / "sj.yaml"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "sj.yaml"), "--json"]) == 0
    out = capsys.readouterr().out
    status = strict_loads(out)
    failed = [t for t in status["trials"] if t["state"] == "FAIL"]
    complete = [t for t in status["trials"] if t["state"] == "COMPLETE"]
    assert len(failed) == 1 and len(complete) == 1
    # the failed trial's scores are null; the complete one's are numbers (a mixed float column was NaN before)
    assert failed[0]["cv_score"] is None and failed[0]["threshold"] is None
    assert isinstance(complete[0]["cv_score"], float) and complete[0]["alpha"] == 1.0
    assert status["best"]["trial"] == complete[0]["trial"]
