"""A property-based fuzzer (Hypothesis) over what a user hands losstune: the trial options of the command line,
study files and their environment, CSV files (quoting, separators, encodings, control characters, Unicode forms in
names and cells), test files for ``predict`` and model directories with random manifest values.

Every generated case must satisfy one property (:func:`tests.fuzz_support.run_cli`): exit 0 with a correct result,
or exit 2 with one line, no traceback, no warning and every existing file unchanged. Numbers are drawn over their
whole range and beyond (:func:`tests.fuzz_support.wide_numbers`); a field whose valid values cost time to run
(epochs, layer sizes, repeats) draws either a value outside its range or a small valid one, so that the examples
that pass validation stay fast. The ``ci`` profile (default) is derandomized with a fixed example budget;
``LOSSTUNE_FUZZ_PROFILE=long`` runs a longer random hunt.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from search.model.model_dir import self_sha256, sha256_of
from tests.conftest import synthetic_frame
from tests.fuzz_support import fuzz_settings, run_cli, valid_or_wide, wide_numbers
from tests.model_fixture import make_model_dir


def _costly(valid: list, low: float, high: float) -> st.SearchStrategy:
    """A field whose valid values cost run time: a small valid value, or any number outside ``[low, high]``."""
    return st.one_of(
        st.sampled_from(valid),
        wide_numbers().filter(lambda v: (isinstance(v, float) and math.isnan(v)) or not low <= v <= high),
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return make_model_dir(tmp_path_factory.mktemp("fuzz_model"))


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz_data") / "data.csv"
    synthetic_frame(n=60, seed=4, missing=True).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- the command line's trial options (evaluate)

CHEAP_OPTIONS = {
    "--gamma": valid_or_wide(st.floats(0, 100)),
    "--alpha": valid_or_wide(st.floats(0, 1)),
    "--bce-weight": valid_or_wide(st.floats(0, 1e6)),
    "--focal-weight": valid_or_wide(st.floats(0, 1e6)),
    "--dropout": valid_or_wide(st.floats(0, 0.99)),
    "--lr": valid_or_wide(st.floats(1e-300, 1e300)),
    "--weight-decay": valid_or_wide(st.floats(0, 1e300)),
    "--seed": valid_or_wide(st.integers(0, 2**32 - 1)),
    "--beta": valid_or_wide(st.floats(1e-300, 1000)),
}
COSTLY_OPTIONS = {
    "--folds": _costly([2, 3], 2, 100),
    "--repeats": _costly([1, 2], 1, 100),
    "--epochs": _costly([1, 2], 1, 100_000),
    "--batch-size": _costly([1, 16, 10**6], 1, 1 << 24),
    "--hidden": _costly([2, 4], 1, 65536),
}


@fuzz_settings(ci_examples=30)
@given(
    cheap=st.dictionaries(st.sampled_from(sorted(CHEAP_OPTIONS)), st.none(), max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: CHEAP_OPTIONS[k] for k in keys})
    ),
    costly=st.fixed_dictionaries({k: v for k, v in COSTLY_OPTIONS.items()}),
    oof=st.booleans(),
)
def test_fuzz_trial_options_of_evaluate(data_csv, cheap, costly, oof):
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        data = work / "data.csv"
        shutil.copy(data_csv, data)
        argv = ["evaluate", "--data", str(data), "--target", "label", "--json"]
        if "--beta" in cheap:
            argv += ["--metric", "fbeta"]
        for option, value in {**costly, **cheap}.items():
            argv += [f"{option}={value}"]
        if oof:
            (work / "oof.csv").write_text("an earlier output\n")
            argv += ["--oof-out", str(work / "oof.csv")]
        outcome = run_cli(argv, [work], new_outputs=(work / "oof.csv",))
        if outcome.rc == 0:
            result = json.loads(outcome.out)
            assert result["n_rows"] == 60 and 0.0 <= result["threshold"] <= 1.0
            if oof:
                assert len(pd.read_csv(work / "oof.csv")) == 60 * int(float(costly["--repeats"]))


# ---------------------------------------------------------------- study files and the environment (search)


def _study_numbers() -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {
            "seed": valid_or_wide(st.integers(0, 2**31 - 1)),
            "folds": _costly([2, 3], 2, 100),
            "budget": _costly([0, 1], 0, 100_000),
            "lr": valid_or_wide(st.floats(1e-300, 1e300)),
            "weight_decay": valid_or_wide(st.floats(0, 1e300)),
            "dropout": valid_or_wide(st.floats(0, 0.99)),
            "beta": st.none() | valid_or_wide(st.floats(1e-300, 1000)),
            "reference_gamma": st.none() | valid_or_wide(st.floats(0, 10)),
            "epochs": _costly([1], 1, 100_000),
        },
        optional={
            "LOSSTUNE_HEARTBEAT_SECONDS": valid_or_wide(st.floats(0.01, 60)),
            "LOSSTUNE_GRACE_SECONDS": valid_or_wide(st.floats(0.02, 600)),
        },
    )


def _study_text(n: dict) -> str:
    study = {
        "name": "fz",
        "data": {"path": "data.csv", "target": "label", "positive": "yes"},
        "cv": {"folds": n["folds"], "seed": n["seed"]},
        "model": {"hidden": [2], "dropout": n["dropout"]},
        "train": {"epochs": n["epochs"], "batch_size": 64, "lr": n["lr"], "weight_decay": n["weight_decay"]},
        "budget": {"trials_per_week": n["budget"]},
    }
    if n["beta"] is not None:
        study.update(metric="fbeta", beta=n["beta"])
    if n["reference_gamma"] is not None:
        study["reference"] = {"gamma": n["reference_gamma"]}
    return yaml.safe_dump(study)  # .inf / .nan, and integers of any size, as YAML writes them


@fuzz_settings(ci_examples=12)
@given(numbers=_study_numbers())
def test_fuzz_study_file_numbers(data_csv, numbers, monkeypatch):
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-30T09:00")
    for name in ("LOSSTUNE_HEARTBEAT_SECONDS", "LOSSTUNE_GRACE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
        if name in numbers:
            monkeypatch.setenv(name, str(numbers[name]))
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        shutil.copy(data_csv, work / "data.csv")
        (work / "fz.yaml").write_text(_study_text(numbers))
        created = (work / "fz.optuna.db", work / "mlflow.db", work / "mlartifacts")
        outcome = run_cli(["search", str(work / "fz.yaml"), "--no-progress"], [work], new_outputs=created)
        if outcome.rc == 0:
            assert "budget" in outcome.out


# ---------------------------------------------------------------- CSV files (evaluate)

_SEPARATORS = [",", ";", "\t", "|"]
_ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "cp932"]
_AWKWARD = ["\n", "\r", "\r\n", '"', "'", ",", ";", "\t", "|", "\x1b[31m", "\x07", "\x7f", "\u2028", "\ufeff", " "]


def _plain_name() -> st.SearchStrategy:
    return st.from_regex(r"[A-Za-z][A-Za-z0-9_ ]{0,8}", fullmatch=True) | st.sampled_from(["売上", "café", "年齢"])


def _text() -> st.SearchStrategy:
    """Short text with the characters that break CSV files and terminals, in NFC or NFD form."""
    pieces = st.lists(
        st.one_of(st.sampled_from(_AWKWARD), st.sampled_from(["é", "が", "ｶﾞ", "Å", "ﬁ"]), st.text(max_size=3)),
        max_size=4,
    ).map("".join)
    return st.tuples(pieces, st.sampled_from(["NFC", "NFD", "NFKC"])).map(
        lambda t: unicodedata.normalize(t[1], t[0].replace("\x00", ""))
    )


@st.composite
def csv_files(draw) -> tuple[bytes, int, str | None, str | None]:
    """(bytes, data rows, the --sep and --encoding to pass or None): a table with a valid 0/1 target ``y`` and
    random feature columns, names and cells, written with a random dialect and encoding."""
    n_rows = draw(st.integers(4, 24))
    names = draw(st.lists(st.one_of(_plain_name(), _plain_name(), _text()), min_size=1, max_size=3))
    numeric = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    columns = {}
    for name, is_number in zip(names, numeric):
        cell = st.floats(allow_nan=False, width=32).map(repr) if is_number else st.one_of(_plain_name(), _text())
        columns[name] = draw(st.lists(cell, min_size=n_rows, max_size=n_rows))
    y = [str(i % 2) for i in range(n_rows)]
    sep = draw(st.sampled_from(_SEPARATORS))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=sep, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow([*names, "y"])
    for i in range(n_rows):
        writer.writerow([*(columns[n][i] for n in names), y[i]])
    encoding = draw(st.sampled_from(_ENCODINGS))
    try:
        raw = buffer.getvalue().encode(encoding)
    except UnicodeEncodeError:
        encoding, raw = "utf-8", buffer.getvalue().encode("utf-8")
    give_sep = draw(st.booleans())
    give_encoding = draw(st.booleans())
    return raw, n_rows, sep if give_sep else None, encoding if give_encoding else None


@fuzz_settings(ci_examples=60)
@given(case=csv_files())
def test_fuzz_csv_through_evaluate(case):
    raw, n_rows, sep, encoding = case
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "data.csv").write_bytes(raw)
        argv = ["evaluate", "--data", str(work / "data.csv"), "--target", "y", "--folds", "2", "--epochs", "1"]
        argv += [
            "--hidden",
            "2",
            "--json",
            *(["--sep", sep] if sep else []),
            *(["--encoding", encoding] if encoding else []),
        ]
        outcome = run_cli(argv, [work])
        if outcome.rc == 0:
            result = json.loads(outcome.out)
            assert result["n_rows"] == n_rows, outcome.out


# ---------------------------------------------------------------- test files and model directories (predict)


@st.composite
def predict_test_files(draw) -> tuple[str, int]:
    """A test file for the tiny model: its columns (sometimes one missing, renamed or duplicated) with random
    cells: numbers over the whole float range, text with control characters, blanks."""
    n_rows = draw(st.integers(1, 12))
    header = ["row_id", "num1", "num2", "color"]
    header = draw(st.sampled_from([header, header[:-1], [*header, "num1"], ["row_id", "num1", "num2", "colour"]]))
    number = st.one_of(st.floats(-1e3, 1e3).map(str), st.floats(-1e3, 1e3).map(str), wide_numbers().map(str))
    cell = {
        "num1": st.one_of(number, _text(), st.just("")),
        "num2": st.one_of(number, st.just("")),
        "color": st.one_of(st.sampled_from(["red", "green", "blue", "Red ", "purple"]), _text(), st.just("")),
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for i in range(n_rows):
        writer.writerow([f"R{i}", *(draw(cell.get(name, number)) for name in header[1:])])
    return buffer.getvalue(), n_rows


def _check_predictions(out: Path, n_rows: int, threshold: float) -> None:
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(frame) == n_rows
    label, proba = frame.iloc[:, -2].astype(int), frame.iloc[:, -1].astype(float)  # named after the target
    assert proba.between(0.0, 1.0).all()
    assert ((proba >= threshold).astype(int) == label).all()


@fuzz_settings(ci_examples=50)
@given(case=predict_test_files())
def test_fuzz_test_file_through_predict(tiny, case):
    text, n_rows = case
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "t.csv").write_text(text, encoding="utf-8")
        (work / "out.csv").write_text("an earlier output\n")
        argv = ["predict", str(tiny["model"]), str(work / "t.csv"), "-o", str(work / "out.csv"), "--proba"]
        outcome = run_cli(argv, [work, tiny["model"]], new_outputs=(work / "out.csv",))
        if outcome.rc == 0:
            _check_predictions(work / "out.csv", n_rows, 0.4)


MANIFEST_FIELDS = ["threshold", "n_inputs", "format_version", "positive_label", "negative_label", "target"]


@fuzz_settings(ci_examples=40)
@given(
    values=st.dictionaries(
        st.sampled_from(MANIFEST_FIELDS),
        st.one_of(wide_numbers(), _text(), st.none(), st.lists(st.integers(), max_size=2)),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_manifest_values_through_predict(tiny, values):
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        model = work / "model"
        shutil.copytree(tiny["model"], model)
        path = model / "artifacts" / "losstune_model.json"
        manifest = json.loads(path.read_text())
        manifest.update(values)
        manifest["files"] = {rel: sha256_of(model / rel) for rel in manifest["files"]}
        manifest["self_sha256"] = self_sha256(manifest)
        try:
            path.write_text(json.dumps(manifest))
        except ValueError:  # NaN and infinity are no JSON: json.dumps writes them, strict readers refuse them
            return
        argv = ["predict", str(model), str(tiny["test"]), "-o", str(work / "out.csv"), "--proba"]
        outcome = run_cli(argv, [work], new_outputs=(work / "out.csv",))
        if outcome.rc == 0:
            threshold = float(manifest["threshold"])
            _check_predictions(work / "out.csv", len(pd.read_csv(tiny["test"])), threshold)
