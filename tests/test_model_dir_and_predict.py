"""A model directory read by ``losstune predict``: confined to its own listed, checksummed regular files; numbers
training would refuse, non-finite weights and outputs refused with the rows named; the served model reading a
frame as the CLI reads a file; the test file streamed in chunks with the same parsing in every chunk."""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import objectives.final as final_module
import search.model.predict as predict_module
from objectives.errors import LosstuneError
from search.cli import EXIT_BAD_INPUT, main
from search.model.model_dir import self_sha256 as _self_sha256
from search.model.model_dir import sha256_of
from search.model.model_dir_loading import load_model_dir
from tests.model_fixture import make_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return make_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def model_copy(tiny, tmp_path) -> Path:
    dest = tmp_path / "model"
    shutil.copytree(tiny["model"], dest)
    return dest


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def resign(model: Path) -> None:
    """What anyone who can write the directory can do: recompute every checksum after an edit."""
    path = model / "artifacts" / "losstune_model.json"
    manifest = json.loads(path.read_text())
    manifest["files"] = {rel: sha256_of(model / rel) for rel in manifest["files"] if (model / rel).is_file()}
    manifest["self_sha256"] = _self_sha256(manifest)
    path.write_text(json.dumps(manifest))


def predict_refuses(capsys, model, test, tmp_path, expected) -> str:
    out = tmp_path / "s.csv"
    rc, _, err = run_cli(capsys, "predict", model, test, "-o", out, "--proba")
    assert rc == EXIT_BAD_INPUT, err
    assert err.count("\n") == 1 and "Traceback" not in err and expected in err, err
    assert not out.exists() and not out.with_name("s.csv.tmp").exists()
    return err


# --- confinement ------------------------------------------------------------------------------------------


def test_every_file_is_listed_with_its_sha256_mlmodel_included(tiny):
    manifest = json.loads((tiny["model"] / "artifacts" / "losstune_model.json").read_text())
    on_disk = {
        p.relative_to(tiny["model"]).as_posix()
        for p in tiny["model"].rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert set(manifest["files"]) == on_disk - {"artifacts/losstune_model.json"}
    assert manifest["files"]["MLmodel"] == sha256_of(tiny["model"] / "MLmodel")


def test_edited_mlmodel_is_refused(model_copy, tiny, capsys, tmp_path):
    text = (model_copy / "MLmodel").read_text()
    (model_copy / "MLmodel").write_text(text + "\n# edited\n")
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "MLmodel does not match the sha256")


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside/weights.pt", "artifacts/../../x.pt"])
def test_artifact_path_leaving_the_directory_is_refused(model_copy, tiny, capsys, tmp_path, path):
    text = (model_copy / "MLmodel").read_text()
    assert "path: artifacts/weights.pt" in text
    (model_copy / "MLmodel").write_text(text.replace("path: artifacts/weights.pt", f"path: {path}"))
    resign(model_copy)  # even re-signed: the path itself is refused
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "outside the model directory")


def test_symlinked_artifact_is_refused(model_copy, tiny, capsys, tmp_path):
    outside = tmp_path / "elsewhere.pt"
    shutil.move(model_copy / "artifacts" / "weights.pt", outside)
    (model_copy / "artifacts" / "weights.pt").symlink_to(outside)
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "symbolic link, 'artifacts/weights.pt'")


def test_symlinked_directory_is_refused(model_copy, tiny, capsys, tmp_path):
    shutil.move(model_copy / "code", tmp_path / "code_elsewhere")
    (model_copy / "code").symlink_to(tmp_path / "code_elsewhere", target_is_directory=True)
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "symbolic link, 'code'")


def test_stray_pickle_is_refused(model_copy, tiny, capsys, tmp_path):
    (model_copy / "model.pkl").write_bytes(b"\x80\x04N.")
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "'model.pkl', which is not part of the saved model")


def test_fifo_in_the_directory_is_refused_without_reading_it(model_copy, tiny, capsys, tmp_path):
    os.mkfifo(model_copy / "artifacts" / "pipe")  # opening it for reading would block forever
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "'artifacts/pipe', which is not a regular file")


def test_edited_bundled_code_is_refused(model_copy, tiny, capsys, tmp_path):
    target = model_copy / "code" / "objectives" / "final.py"
    target.write_text(target.read_text() + "\n# edited\n")
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "code/objectives/final.py does not match the sha256")


def test_duplicate_key_in_mlmodel_and_in_exported_config_is_refused(model_copy, tiny, capsys, tmp_path):
    text = (model_copy / "MLmodel").read_text()
    (model_copy / "MLmodel").write_text(text + "utc_time_created: '2026-01-01'\n")
    resign(model_copy)
    err = predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "duplicate key 'utc_time_created'")
    assert "line" in err

    shutil.rmtree(model_copy)
    shutil.copytree(tiny["model"], model_copy)
    config = model_copy / "artifacts" / "exported_config.yaml"
    config.write_text(config.read_text() + "threshold: 0.9\n")
    resign(model_copy)
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "duplicate key 'threshold'")


def test_deeply_nested_mlmodel_is_one_line(model_copy, tiny, capsys, tmp_path):
    (model_copy / "MLmodel").write_text("metadata: " + "[" * 20000 + "]" * 20000 + "\n")
    resign(model_copy)
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "nested too deeply")


# --- numbers beyond float32, non-finite weights and outputs ----------------------------------------------


@pytest.mark.parametrize("value", ["1e308", "-4e38", "inf"])
def test_value_beyond_float32_is_refused_naming_column_and_line(tiny, capsys, tmp_path, value):
    test = pd.read_csv(tiny["test"], dtype=str)
    test.loc[7, "num2"] = value  # line 9
    test.to_csv(tmp_path / "t.csv", index=False)
    err = predict_refuses(capsys, tiny["model"], tmp_path / "t.csv", tmp_path, "'num2'")
    assert "line 9" in err and "float32" in err


def test_value_that_standardises_beyond_float32_is_refused(tmp_path):
    from tests.model_fixture import make_model_dir

    tiny = make_model_dir(tmp_path, numeric_embedding="none")  # the embedding bounds every value: no overflow
    model = load_model_dir(tiny["model"])
    scaler = model.final.preprocessor.named_transformers_["numeric"].named_steps["scale"]
    scaler.scale_ = scaler.scale_ * 1e-9  # a column that varied little in training
    test = pd.read_csv(tiny["test"])
    test.loc[3, "num1"] = 3e38  # within float32, but beyond it once standardised
    with pytest.raises(LosstuneError, match=r"'num1' has value.* too far outside the training range.* line 5"):
        model.predict(test, first_line=2)


def test_training_refuses_a_value_beyond_float32_in_one_line(tiny, capsys, tmp_path):
    train = pd.read_csv(tiny["train"], dtype=str)
    train.loc[10, "num2"] = "1e308"
    train.to_csv(tmp_path / "train.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        rc, _, err = run_cli(
            capsys, "train", tiny["best"], "--data", tmp_path / "train.csv", "-o", tmp_path / "m", "--no-track"
        )
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1
    assert "'num2'" in err and "line 12" in err and "learning rate" not in err
    assert not (tmp_path / "m").exists()


def test_nan_weights_are_refused_even_when_re_signed(model_copy, tiny, capsys, tmp_path):
    weights = model_copy / "artifacts" / "weights.pt"
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    torch.save(state, weights)
    manifest_path = model_copy / "artifacts" / "losstune_model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sha256"]["weights"] = sha256_of(weights)
    manifest_path.write_text(json.dumps(manifest))
    resign(model_copy)
    predict_refuses(capsys, model_copy, tiny["test"], tmp_path, "NaN or infinite")


def test_non_finite_output_is_refused_not_written_blank(tiny, capsys, tmp_path, monkeypatch):
    from objectives.final import FinalModel

    real = FinalModel.network

    def poisoned(self):
        net = real(self)
        with torch.no_grad():
            next(net.parameters()).fill_(float("inf"))
        return net

    model = load_model_dir(tiny["model"])
    monkeypatch.setattr(FinalModel, "network", poisoned)
    with pytest.raises(LosstuneError, match="not a number at line 2"):
        model.predict(pd.read_csv(tiny["test"]), first_line=2)


def test_no_blank_probability_or_defaulted_label_in_a_submission(tiny, capsys, tmp_path):
    rc, _, err = run_cli(capsys, "predict", tiny["model"], tiny["test"], "-o", tmp_path / "s.csv", "--proba")
    assert rc == 0, err
    sub = pd.read_csv(tmp_path / "s.csv")
    assert sub["proba"].notna().all() and np.isfinite(sub["proba"]).all()
    assert (sub["label"] == (sub["proba"] >= 0.4).astype(int)).all()


# --- the served model reads a frame as the CLI reads a file ---------------------------------------------


def test_pyfunc_accepts_blank_cells_like_the_cli_and_drops_the_id_without_warning(tiny, capsys, tmp_path):
    import mlflow.pyfunc

    text = tiny["test"].read_text().splitlines()
    header, rows = text[0], text[1:]
    cols = header.split(",")
    i = cols.index("num2")
    blanked = []
    for n, row in enumerate(rows):
        cells = row.split(",")
        if n % 5 == 0:
            cells[i] = " "
        blanked.append(",".join(cells))
    (tmp_path / "t.csv").write_text("\n".join([header, *blanked]) + "\n")
    rc, _, err = run_cli(capsys, "predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "s.csv", "--proba")
    assert rc == 0, err
    model = mlflow.pyfunc.load_model(str(tiny["model"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        served = model.predict(pd.read_csv(tmp_path / "t.csv"))
    assert not [w for w in caught if "row_id" in str(w.message)]
    sub = pd.read_csv(tmp_path / "s.csv")
    np.testing.assert_array_equal(served["proba"].to_numpy(), sub["proba"].to_numpy())
    np.testing.assert_array_equal(served["label"].to_numpy(), sub["label"].to_numpy())


def test_pyfunc_load_leaves_the_directory_loadable_by_predict(model_copy, tiny, capsys, tmp_path):
    import subprocess
    import sys

    script = (
        "import mlflow.pyfunc, pandas as pd; "
        f"mlflow.pyfunc.load_model({str(model_copy)!r}).predict(pd.read_csv({str(tiny['test'])!r}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    rc, _, err = run_cli(capsys, "predict", model_copy, tiny["test"], "-o", tmp_path / "s.csv")
    assert rc == 0, err


# --- streaming in chunks --------------------------------------------------------------------------------


def test_chunks_give_the_same_output_as_one_chunk(tiny, capsys, tmp_path, monkeypatch):
    test = pd.read_csv(tiny["test"], dtype=str)
    test.loc[test.index[-3:], "num1"] = " "  # blanks only in the last chunk: still a numeric column
    test.to_csv(tmp_path / "t.csv", index=False)
    monkeypatch.setattr(final_module, "FORWARD_ROWS", 4)
    rc, _, err = run_cli(capsys, "predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "whole.csv", "--proba")
    assert rc == 0, err
    monkeypatch.setattr(predict_module, "CHUNK_ROWS", 8)
    rc, _, err = run_cli(capsys, "predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "chunks.csv", "--proba")
    assert rc == 0, err
    assert (tmp_path / "whole.csv").read_bytes() == (tmp_path / "chunks.csv").read_bytes()
    assert pd.read_csv(tmp_path / "chunks.csv")["row_id"].tolist() == test["row_id"].tolist()


def test_junk_in_a_later_chunk_names_its_line_and_keeps_the_old_output(tiny, capsys, tmp_path, monkeypatch):
    test = pd.read_csv(tiny["test"], dtype=str)
    test.loc[40, "num1"] = "n/a?"  # line 42, in the sixth chunk of 7 rows
    test.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.csv").write_text("previous output\n")
    monkeypatch.setattr(predict_module, "CHUNK_ROWS", 7)
    rc, _, err = run_cli(capsys, "predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "s.csv")
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and "'num1'" in err and "line 42" in err
    assert (tmp_path / "s.csv").read_text() == "previous output\n"
    assert not (tmp_path / "s.csv.tmp").exists()


def test_unseen_categories_are_counted_once_over_all_chunks(tiny, capsys, tmp_path, monkeypatch, caplog):
    test = pd.read_csv(tiny["test"], dtype=str)
    test.loc[[1, 20, 45], "color"] = "purple"
    test.to_csv(tmp_path / "t.csv", index=False)
    monkeypatch.setattr(predict_module, "CHUNK_ROWS", 7)
    with caplog.at_level(logging.WARNING):
        rc, _, err = run_cli(capsys, "predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "s.csv")
    assert rc == 0, err
    warned = [r.getMessage() for r in caplog.records if "not seen in training" in r.getMessage()]
    assert len(warned) == 1 and "'color': 3 row(s)" in warned[0]


def test_full_disk_during_the_write_leaves_no_tmp_and_the_old_output(tiny, capsys, tmp_path, monkeypatch):
    (tmp_path / "s.csv").write_text("previous output\n")
    real = pd.DataFrame.to_csv
    calls = []

    def full_disk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(predict_module, "CHUNK_ROWS", 7)
    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    rc, _, err = run_cli(capsys, "predict", tiny["model"], tiny["test"], "-o", tmp_path / "s.csv")
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and "No space left on device" in err
    assert (tmp_path / "s.csv").read_text() == "previous output\n"
    assert not (tmp_path / "s.csv.tmp").exists()


def test_an_exported_file_without_embedding_key_means_no_embedding(tiny, tmp_path):
    """A best.yaml exported before 0.3.0 names no numeric_embedding (its model had none, the default then):
    it still trains that model, though today's default is the target-aware embedding."""
    import yaml

    from search.model.exported_config import load_exported

    raw = yaml.safe_load(Path(tiny["best"]).read_text(encoding="utf-8"))
    assert raw["model"]["numeric_embedding"] == "piecewise_linear_target"  # written now: always named
    del raw["model"]["numeric_embedding"]
    old = Path(tiny["root"]) / "exported_by_0_2.yaml"  # beside best.yaml: data.path is relative to the file
    old.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_exported(old).model.numeric_embedding == "none"
