"""Bad inputs through the command line, one case per row of the matrix. For every case: exit status 2, exactly one
line on stderr, no traceback, no NumPy/torch warning and no logged warning, and every file that existed before
(inputs, the model directory, an earlier output) byte-for-byte unchanged, with nothing new written.

One tiny model directory is trained once for the module (:func:`tests.model_fixture.make_model_dir`); a case
that damages a model works on its own copy."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch

from search.cli import EXIT_BAD_INPUT, main
from search.model.model_dir import self_sha256 as _self_sha256
from search.model.model_dir import sha256_of
from tests.model_fixture import make_model_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return make_model_dir(tmp_path_factory.mktemp("matrix_model"))


def _resign(model: Path) -> None:
    path = model / "artifacts" / "losstune_model.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = {rel: sha256_of(model / rel) for rel in manifest["files"]}
    manifest["self_sha256"] = _self_sha256(manifest)
    path.write_text(json.dumps(manifest))


def _model(tiny, d: Path, edit: Callable[[Path], None] | None = None, resign: bool = True) -> Path:
    model = d / "model"
    shutil.copytree(tiny["model"], model)
    if edit is not None:
        edit(model)
        if resign:
            _resign(model)
    return model


def _test_csv(tiny, d: Path, edit: Callable[[pd.DataFrame], None]) -> Path:
    frame = pd.read_csv(tiny["test"], dtype=str)
    edit(frame)
    frame.to_csv(d / "t.csv", index=False)
    return d / "t.csv"


def _no_id(tiny, d: Path) -> Path:
    """The training file without its id column: a data warning would be a second line before the refusal."""
    pd.read_csv(tiny["train"]).drop(columns=["row_id"]).to_csv(d / "noid.csv", index=False)
    return d / "noid.csv"


def _train_csv_bytes(tiny, d: Path, edit: Callable[[bytes], bytes]) -> Path:
    (d / "data.csv").write_bytes(edit(tiny["train"].read_bytes()))
    return d / "data.csv"


def _set(col: str, row: int, value: str) -> Callable[[pd.DataFrame], None]:
    def edit(frame: pd.DataFrame) -> None:
        frame.loc[row, col] = value

    return edit


def _mlmodel(replace: tuple[str, str] | None = None, append: str = "") -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        text = (model / "MLmodel").read_text()
        if replace:
            assert replace[0] in text
            text = text.replace(*replace)
        (model / "MLmodel").write_text(text + append)

    return edit


def _nan_weights(model: Path) -> None:
    path = model / "artifacts" / "weights.pt"
    state = torch.load(path, weights_only=True)
    state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    torch.save(state, path)
    manifest_path = model / "artifacts" / "losstune_model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"]["weights"] = sha256_of(path)
    manifest_path.write_text(json.dumps(manifest))


def _symlink_weights(model: Path) -> None:
    outside = model.parent / "weights_elsewhere.pt"
    shutil.move(model / "artifacts" / "weights.pt", outside)
    (model / "artifacts" / "weights.pt").symlink_to(outside)


def _fifo(d: Path, name: str = "pipe.csv") -> Path:
    os.mkfifo(d / name)
    return d / name


def _study(d: Path, text: str, data: Path | None = None) -> Path:
    if data is not None:
        text = text.replace("DATA", str(data))
    (d / "s.yaml").write_text(text)
    return d / "s.yaml"


GOOD_STUDY = "name: m\ndata: {path: DATA, target: label}\ncv: {folds: 3}\nmodel: {hidden: [8]}\ntrain: {epochs: 1}\n"
DEEP = "[" * 20000 + "]" * 20000


def _exported(tiny, d: Path, transform: Callable[[str], str]) -> Path:
    (d / "best.yaml").write_text(transform(tiny["best"].read_text()))
    return d / "best.yaml"


def predict(model, test, d):
    return ["predict", model, test, "-o", d / "out.csv", "--proba"]


# case id -> (argv builder (tiny, case dir) -> argv, what the one line must say)
CASES: dict[str, tuple[Callable[[dict, Path], list], str]] = {
    # the test file
    "predict-1e308": (lambda t, d: predict(t["model"], _test_csv(t, d, _set("num2", 4, "1e308")), d), "'num2'"),
    "predict-inf": (lambda t, d: predict(t["model"], _test_csv(t, d, _set("num1", 2, "-inf")), d), "line 4"),
    "predict-junk": (lambda t, d: predict(t["model"], _test_csv(t, d, _set("num1", 9, "abc")), d), "line 11"),
    "predict-invalid-utf8": (
        lambda t, d: predict(t["model"], _train_csv_bytes(t, d, lambda b: b.replace(b"red", b"r\x80d", 1)), d),
        "cannot detect the encoding",
    ),
    "predict-nul": (
        lambda t, d: predict(t["model"], _train_csv_bytes(t, d, lambda b: b.replace(b"red", b"r\x00d", 1)), d),
        "NUL byte",
    ),
    "predict-dev-zero": (lambda t, d: predict(t["model"], Path("/dev/zero"), d), "not a regular file"),
    "predict-directory": (lambda t, d: predict(t["model"], d, d), "is a directory"),
    "predict-fifo": (lambda t, d: predict(t["model"], _fifo(d), d), "not a regular file"),
    "predict-empty": (lambda t, d: predict(t["model"], _train_csv_bytes(t, d, lambda b: b""), d), "empty"),
    "predict-missing-column": (
        lambda t, d: predict(t["model"], _test_csv(t, d, lambda f: f.pop("num2")), d),
        "lacks 1 column",
    ),
    "predict-no-output-dir": (
        lambda t, d: ["predict", t["model"], t["test"], "-o", d / "nowhere" / "o.csv"],
        "output directory does not exist",
    ),
    # the model directory
    "model-stray-pickle": (
        lambda t, d: predict(_model(t, d, lambda m: (m / "model.pkl").write_bytes(b"x"), resign=False), t["test"], d),
        "not part of the saved model",
    ),
    "model-symlink": (
        lambda t, d: predict(_model(t, d, _symlink_weights, resign=False), t["test"], d),
        "symbolic link",
    ),
    "model-absolute-artifact": (
        lambda t, d: predict(_model(t, d, _mlmodel(("path: artifacts/weights.pt", "path: /etc/passwd"))), t["test"], d),
        "outside the model directory",
    ),
    "model-dotdot-artifact": (
        lambda t, d: predict(
            _model(t, d, _mlmodel(("path: artifacts/weights.pt", "path: ../weights.pt"))), t["test"], d
        ),
        "outside the model directory",
    ),
    "model-mlmodel-edited": (
        lambda t, d: predict(_model(t, d, _mlmodel(append="# x\n"), resign=False), t["test"], d),
        "MLmodel does not match the sha256",
    ),
    "model-mlmodel-duplicate-key": (
        lambda t, d: predict(_model(t, d, _mlmodel(append="mlflow_version: 0.0\n")), t["test"], d),
        "duplicate key 'mlflow_version'",
    ),
    "model-mlmodel-deep": (
        lambda t, d: predict(_model(t, d, lambda m: (m / "MLmodel").write_text(f"metadata: {DEEP}\n")), t["test"], d),
        "nested too deeply",
    ),
    "model-config-duplicate-key": (
        lambda t, d: predict(
            _model(t, d, lambda m: (m / "artifacts" / "exported_config.yaml").open("a").write("threshold: 0.9\n")),
            t["test"],
            d,
        ),
        "duplicate key 'threshold'",
    ),
    "model-nan-weights": (lambda t, d: predict(_model(t, d, _nan_weights), t["test"], d), "NaN or infinite"),
    "model-old-format": (
        lambda t, d: predict(
            _model(t, d, _mlmodel(("losstune_format_version: 2", "losstune_format_version: 1")), resign=False),
            t["test"],
            d,
        ),
        "version 1 had no checksum",
    ),
    # training data, exported configurations, study files
    "evaluate-1e308": (
        lambda t, d: [
            "evaluate",
            "--data",
            _train_csv_bytes(t, d, lambda b: _bytes_with_value(b, b"1e308")),
            "--target",
            "label",
            "--folds",
            "3",
            "--epochs",
            "1",
        ],
        "'num2'",
    ),
    "evaluate-cp932-odd-byte": (
        lambda t, d: [
            "evaluate",
            "--data",
            _train_csv_bytes(t, d, lambda b: b.replace(b"blue", b"bl\xfde", 1)),
            "--target",
            "label",
            "--encoding",
            "cp932",
        ],
        "not valid cp932",
    ),
    "evaluate-utf16-missing-target": (
        lambda t, d: [
            "evaluate",
            "--data",
            _train_csv_bytes(t, d, lambda b: b.decode().encode("utf-16")),
            "--target",
            "nope",
        ],
        "(read as utf-16)",
    ),
    "evaluate-dev-zero": (lambda t, d: ["evaluate", "--data", "/dev/zero", "--target", "label"], "not a regular file"),
    "evaluate-huge-network": (
        lambda t, d: [
            "evaluate",
            "--data",
            _no_id(t, d),
            "--target",
            "label",
            "--hidden",
            "65536,65536,65536",
            "--device",
            "cpu",
        ],
        "would need about",
    ),
    "train-1e308": (
        lambda t, d: [
            "train",
            t["best"],
            "--data",
            _train_csv_bytes(t, d, lambda b: _bytes_with_value(b, b"1e308")),
            "-o",
            d / "m",
            "--no-track",
        ],
        "'num2'",
    ),
    "train-config-duplicate-key": (
        lambda t, d: ["train", _exported(t, d, lambda s: s + "threshold: 0.1\n"), "-o", d / "m", "--no-track"],
        "duplicate key 'threshold'",
    ),
    "train-config-deep": (
        lambda t, d: ["train", _exported(t, d, lambda s: s + f"extra: {DEEP}\n"), "-o", d / "m", "--no-track"],
        "nested too deeply",
    ),
    "search-duplicate-key": (
        lambda t, d: ["search", _study(d, GOOD_STUDY + "cv: {folds: 4}\n", t["train"]), "--no-progress"],
        "duplicate key 'cv' (line 3 and line 6)",
    ),
    "search-deep": (
        lambda t, d: ["search", _study(d, f"name: m\nplan: {DEEP}\n"), "--no-progress"],
        "nested too deeply",
    ),
    "search-data-fifo": (
        lambda t, d: ["search", _study(d, GOOD_STUDY, _fifo(d)), "--no-progress"],
        "not a regular file",
    ),
    "search-huge-network": (
        lambda t, d: [
            "search",
            _study(d, GOOD_STUDY.replace("[8]", "[65536, 65536, 65536]"), _no_id(t, d)),
            "--no-progress",
        ],
        "would need about",
    ),
}


def _bytes_with_value(raw: bytes, value: bytes) -> bytes:
    """The training file with ``value`` as num2 of its fifth data row (line 6)."""
    lines = raw.split(b"\n")
    header = lines[0].split(b",")
    cells = lines[5].split(b",")
    cells[header.index(b"num2")] = value
    lines[5] = b",".join(cells)
    return b"\n".join(lines)


def _snapshot(*roots: Path) -> dict[str, object]:
    """Every entry under ``roots``: a regular file's bytes, else its kind (a FIFO is not opened)."""
    out: dict[str, object] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                out[str(path)] = path.read_bytes()
            elif stat.S_ISLNK(mode):
                out[str(path)] = ("link", os.readlink(path))
            else:
                out[str(path)] = stat.S_IFMT(mode)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tiny, tmp_path, capsys, caplog, monkeypatch):
    build, expected = CASES[case]
    monkeypatch.setenv("LOSSTUNE_NOW", "2026-11-30T09:00")
    monkeypatch.chdir(tmp_path)
    argv = [str(a) for a in build(tiny, tmp_path)]
    (tmp_path / "out.csv").write_text("an earlier output\n")  # must survive a refused predict
    before = _snapshot(tmp_path, tiny["root"])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == EXIT_BAD_INPUT, (out, err)
    assert err.count("\n") == 1 and err.startswith(f"losstune {argv[0]}: error: "), err
    assert expected in err, err
    assert "Traceback" not in err
    numeric = [
        w for w in caught if "numpy" in w.filename or "torch" in w.filename or issubclass(w.category, RuntimeWarning)
    ]
    assert not numeric, [str(w.message) for w in numeric]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert _snapshot(tmp_path, tiny["root"]) == before


@pytest.mark.parametrize("case", ["predict-1e308", "model-symlink"])
def test_bad_input_in_a_fresh_process(case, tiny, tmp_path):
    """The real stderr of the command: Python warnings and logging reach it here, as a user would see them."""
    build, expected = CASES[case]
    argv = [str(a) for a in build(tiny, tmp_path)]
    before = _snapshot(tmp_path, tiny["root"])
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", *argv], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert _snapshot(tmp_path, tiny["root"]) == before
