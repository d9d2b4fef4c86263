"""One test (or a few) per class of failure of the hardening issue, each through the mechanism that fixes the class
at its root: bounded numeric types (:mod:`objectives.bounds`), checked options, one table reader
(:mod:`objectives.table`), one atomic writer (:mod:`search.formats.atomic_write`), validated manifests and
tensors (:mod:`search.model.manifest_check`), one store check (:mod:`search.run.store_check`) and the
tracking-server check (:mod:`search.tracking.server_check`). Each refusal is checked with the fuzzer's property
(:func:`tests.fuzz_support.run_cli`): exit 2, one line, no traceback, no warning, nothing changed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
import torch

from objectives.errors import LosstuneError
from search.model.model_dir import self_sha256, sha256_of
from tests.conftest import synthetic_frame, tiny_study
from tests.fuzz_support import run_cli
from tests.model_fixture import make_model_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return make_model_dir(tmp_path_factory.mktemp("hardening_model"))


@pytest.fixture
def data(tmp_path) -> Path:
    synthetic_frame(n=60, seed=4).to_csv(tmp_path / "data.csv", index=False)
    return tmp_path / "data.csv"


def evaluate(data: Path, *options: str) -> list[str]:
    return ["evaluate", "--data", str(data), "--target", "label", "--folds", "2", "--epochs", "1", *options]


def refused(argv: list[str], roots: list[Path], expected: str) -> str:
    outcome = run_cli([str(a) for a in argv], roots)
    assert outcome.rc == 2 and expected in outcome.err, outcome.err
    return outcome.err


# ---------------------------------------------------------------- 1. numbers without bounds


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--seed", str(2**32)], "options.cv.seed"),
        (["--metric", "fbeta", "--beta", "1e200"], "options.metric.beta"),
        (["--metric", "fbeta", "--beta", "inf"], "options.metric.beta"),
        (["--gamma", "nan"], "options.loss.gamma"),
        (["--bce-weight", "1e300"], "options.loss.bce_weight"),
        (["--lr", "inf"], "options.train.lr"),
    ],
)
def test_trial_numbers_beyond_their_range_are_one_line(data, tmp_path, options, expected):
    refused(evaluate(data, *options), [tmp_path], expected)


def test_a_study_seed_leaves_room_for_the_confirm_seeds(tmp_path):
    study = tiny_study(tmp_path, "seeds", budget=1, cv_seed=2**32 - 1000)
    refused(["search", study], [tmp_path], "at most 2147483647")
    assert not (tmp_path / "seeds.optuna.db").exists()


def test_a_fresh_confirm_seed_beyond_the_splitter_is_refused_not_a_crash():
    from objectives.config import LossConfig
    from search.study.phases import Phase
    from search.study.plan import fresh_seed
    from search.study.steps import PlanTrial

    phase = Phase(name="confirm", kind="confirm")
    record = PlanTrial(number=0, phase="grid", state="COMPLETE", value=0.5, loss=LossConfig(), cv_seed=2**32 - 10)
    with pytest.raises(LosstuneError, match="no fresh CV seed"):
        fresh_seed(phase, [record], 0)
    assert fresh_seed(phase, [], 2**31 - 1) <= 2**32 - 1


@pytest.mark.parametrize("name", ["LOSSTUNE_HEARTBEAT_SECONDS", "LOSSTUNE_GRACE_SECONDS"])
@pytest.mark.parametrize("value", ["1e10", "inf", "nan", "-1"])
def test_interval_variables_are_bounded(monkeypatch, name, value):
    from search.run.heartbeats import grace_seconds, heartbeat_seconds

    monkeypatch.setenv(name, value)
    with pytest.raises(LosstuneError, match=name):
        grace_seconds() if "GRACE" in name else heartbeat_seconds()


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "s.yaml", "--timeout", "1e10"],
        ["search", "s.yaml", "--workers", "100000"],
        ["search", "s.yaml", "--budget", str(2**64)],
        ["export", "s.yaml", "--trial", str(2**63)],
    ],
)
def test_command_line_counts_are_bounded_and_a_usage_error_is_one_line(tmp_path, argv):
    refused(argv, [tmp_path], "; see losstune")


@pytest.mark.parametrize("command", ["search", "status", "export", "report"])
def test_an_unknown_option_is_named_by_its_command(tmp_path, command):
    err = refused([command, "s.yaml", "--bogus"], [tmp_path], "unrecognized arguments: --bogus")
    assert err.strip() == f"losstune {command}: error: unrecognized arguments: --bogus; see losstune {command} --help"
    err = refused([command, "s.yaml", "-v"], [tmp_path], "-v/--verbose goes before the command")
    assert f"losstune -v {command} ...; see losstune {command} --help" in err, err


# ---------------------------------------------------------------- 2. options that reached a library unchecked


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--encoding", "rot13"], "encoding 'rot13' is not supported"),
        (["--encoding", "hex"], "encoding 'hex' is not supported"),
        (["--encoding", "utf-32"], "encoding 'utf-32' is not supported"),
        (["--sep", ";;"], "separator ';;' is not usable"),
        (["--sep", '"'], "is not usable"),
    ],
)
def test_encoding_and_separator_are_checked_where_given(data, tmp_path, options, expected):
    refused(evaluate(data, *options), [tmp_path], expected)


# ---------------------------------------------------------------- 3. the header and the file


def test_an_unclosed_quote_in_a_long_header_is_one_line(tmp_path):
    (tmp_path / "q.csv").write_text('"a' + "x" * 200_000 + ",b,label\n1,2,0\n")
    refused(["evaluate", "--data", tmp_path / "q.csv", "--target", "label"], [tmp_path], "an unclosed quote?")


def test_predict_finds_a_duplicate_name_beyond_the_first_64_kb(tiny, tmp_path):
    padding = [f"padding_column_{i:05d}" for i in range(9000)]
    header = ",".join(["row_id", "num1", "num2", "color", *padding, "num1"])
    row = ",".join(["R1", "1.0", "2.0", "red", *([""] * len(padding)), "1.0"])
    (tmp_path / "t.csv").write_text(header + "\n" + row + "\n")
    assert len(header) > 1 << 16
    refused(["predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "o.csv"], [tmp_path], "duplicate column")


def test_predict_reads_the_test_file_in_the_encoding_given(tiny, tmp_path):
    """A test file in another encoding than the training data's: --encoding names it; a wrong one is one line
    that says where to set it, and an unknown name is refused before the file is read."""
    from search.cli import main

    text = (tiny["test"].parent / "test.csv").read_text().replace("green", "緑")  # a category unseen in training
    (tmp_path / "t.csv").write_bytes(text.encode("cp932"))
    outputs = {}
    for encoding in (None, "cp932"):
        out = tmp_path / f"o_{encoding}.csv"
        argv = [
            "predict",
            tiny["model"],
            tmp_path / "t.csv",
            "-o",
            out,
            *(["--encoding", encoding] if encoding else []),
        ]
        assert main([str(a) for a in argv]) == 0
        outputs[encoding] = out.read_text()
    assert outputs[None] == outputs["cp932"] and len(outputs[None].splitlines()) == 51
    err = refused(
        ["predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "o.csv", "--encoding", "utf-8"],
        [tmp_path],
        "is not valid utf-8",
    )
    assert "--encoding on the command line" in err
    refused(
        ["predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "o.csv", "--encoding", "rot13"],
        [tmp_path],
        "encoding 'rot13' is not supported",
    )


@pytest.mark.parametrize("what", ["data", "study"])
def test_a_huge_sparse_file_is_one_line_not_a_memory_error(tmp_path, what):
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        f.truncate(40 * 10**9)  # sparse: no disk used
    if what == "data":
        refused(["evaluate", "--data", big, "--target", "label"], [tmp_path], "GB of memory available")
    else:
        big.rename(tmp_path / "big.yaml")
        refused(["status", tmp_path / "big.yaml"], [tmp_path], "larger than 16 MB")


@pytest.mark.parametrize("name", ["a\nb", "a\x1b[31mb", "a\tb"])
def test_a_column_name_with_a_control_character_is_refused_and_never_printed_raw(tmp_path, name):
    frame = synthetic_frame(n=40, seed=1)
    frame[name] = frame["num1"]
    frame.to_csv(tmp_path / "d.csv", index=False)
    err = refused(["evaluate", "--data", tmp_path / "d.csv", "--target", "label"], [tmp_path], "control character")
    assert "\x1b" not in err and "\t" not in err


def test_nfc_and_nfd_spellings_of_one_name_are_one_column(tmp_path):
    frame = synthetic_frame(n=40, seed=1)
    frame[unicodedata.normalize("NFC", "café")] = frame["num1"]
    frame[unicodedata.normalize("NFD", "café")] = frame["num2"]
    frame.to_csv(tmp_path / "d.csv", index=False)
    refused(["evaluate", "--data", tmp_path / "d.csv", "--target", "label"], [tmp_path], "duplicate column name")


def test_a_target_named_in_nfd_finds_its_nfc_column(tmp_path):
    frame = synthetic_frame(n=40, seed=1).rename(columns={"label": unicodedata.normalize("NFC", "étiquette")})
    frame.to_csv(tmp_path / "d.csv", index=False)
    nfd = unicodedata.normalize("NFD", "étiquette")
    outcome = run_cli([*evaluate(tmp_path / "d.csv")[:4], nfd, "--folds", "2", "--epochs", "1"], [tmp_path])
    assert outcome.rc == 0, outcome.err


# ---------------------------------------------------------------- 4. writes without fault handling


def _full_disk(monkeypatch):
    from search.formats import atomic_write

    real = atomic_write.os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real(fd, *args, **kwargs)

        def write(_data):
            raise OSError(28, "No space left on device")

        f.write = write
        return f

    monkeypatch.setattr(atomic_write.os, "fdopen", fdopen)


def test_oof_out_onto_a_full_disk_is_one_line_and_leaves_nothing(data, tmp_path, monkeypatch):
    (tmp_path / "oof.csv").write_text("an earlier output\n")
    _full_disk(monkeypatch)
    refused(evaluate(data, "--oof-out", tmp_path / "oof.csv"), [tmp_path], "No space left on device")


def test_train_whose_save_fails_leaves_no_partial_model_directory(tiny, tmp_path, monkeypatch):
    import mlflow.pyfunc

    def save_model(path, **kwargs):
        (Path(path) / "MLmodel").write_text("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mlflow.pyfunc, "save_model", save_model)
    pd.read_csv(tiny["train"]).drop(columns=["row_id"]).to_csv(tmp_path / "noid.csv", index=False)  # no warning
    argv = ["train", tiny["best"], "--data", tmp_path / "noid.csv", "-o", tmp_path / "model", "--no-track"]
    refused(argv, [tmp_path], "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["noid.csv"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_train_into_a_read_only_directory_is_refused_before_training(tiny, tmp_path):
    out_dir = tmp_path / "ro"
    out_dir.mkdir()
    out_dir.chmod(0o555)
    try:
        refused(["train", tiny["best"], "-o", out_dir / "model", "--no-track"], [tmp_path], "is not writable")
    finally:
        out_dir.chmod(0o755)


# ---------------------------------------------------------------- 5. unsafe temporary files


def test_a_planted_tmp_symlink_is_neither_followed_nor_removed(tiny, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "out.csv.tmp").symlink_to(victim)
    argv = ["predict", tiny["model"], tiny["test"], "-o", tmp_path / "out.csv"]
    outcome = run_cli([str(a) for a in argv], [tmp_path], new_outputs=(tmp_path / "out.csv",))
    assert outcome.rc == 0, outcome.err
    assert victim.read_text() == "precious\n" and (tmp_path / "out.csv.tmp").is_symlink()
    assert not (tmp_path / "out.csv").is_symlink() and len(pd.read_csv(tmp_path / "out.csv")) == 50


def test_an_unrelated_tmp_file_survives_a_refusal(tiny, tmp_path):
    (tmp_path / "out.csv.tmp").write_text("mine\n")
    (tmp_path / "t.csv").write_text("row_id,num1\nR1,1\n")
    refused(["predict", tiny["model"], tmp_path / "t.csv", "-o", tmp_path / "out.csv"], [tmp_path], "lacks")
    assert (tmp_path / "out.csv.tmp").read_text() == "mine\n"


@pytest.mark.parametrize("command", ["predict", "evaluate", "export"])
def test_an_output_that_is_an_input_is_refused(tiny, tmp_path, command):
    test = tmp_path / "test.csv"
    shutil.copy(tiny["test"], test)
    if command == "predict":
        argv = ["predict", tiny["model"], test, "-o", test]
    elif command == "evaluate":
        shutil.copy(tiny["train"], tmp_path / "train.csv")
        argv = ["evaluate", "--data", tmp_path / "train.csv", "--target", "label", "--oof-out", tmp_path / "train.csv"]
    else:
        study = tiny_study(tmp_path, "io", budget=1)
        argv = ["export", study, "-o", study]
    refused(argv, [tmp_path, tiny["root"]], "is also an input of this command")


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from search.formats.atomic_write import atomic_file\n"
        "out = Path(sys.argv[1])\n"
        "try:\n"
        "    with atomic_file(out) as f:\n"
        "        f.write('half')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        f.write('never')\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n"
    )
    (tmp_path / "out.csv").write_text("earlier\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out.csv")], cwd=REPO, timeout=120)
    assert done.returncode == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    assert (tmp_path / "out.csv").read_text() == "earlier\n"


def test_predict_killed_by_sigterm_leaves_no_temporary_file(tiny, tmp_path):
    rows = pd.concat([pd.read_csv(tiny["test"], dtype=str)] * 4000, ignore_index=True)  # 200,000 rows: seconds
    rows.to_csv(tmp_path / "t.csv", index=False)
    argv = [sys.executable, "-m", "search.cli", "predict", str(tiny["model"]), str(tmp_path / "t.csv")]
    proc = subprocess.Popen([*argv, "-o", str(tmp_path / "o.csv")], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.iterdir())) == 1 and time.monotonic() < deadline:  # until the output is being written
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 0), err  # 0: it finished before the signal arrived
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["t.csv", *(["o.csv"] if proc.returncode == 0 else [])])


# ---------------------------------------------------------------- 6. a re-signed model directory


def _resigned(tiny, tmp_path: Path, manifest_changes=None, weights=None) -> Path:
    model = tmp_path / "model"
    shutil.copytree(tiny["model"], model)
    if weights is not None:
        state = torch.load(model / "artifacts" / "weights.pt", weights_only=True)
        torch.save(weights(state), model / "artifacts" / "weights.pt")
    path = model / "artifacts" / "losstune_model.json"
    manifest = json.loads(path.read_text())
    manifest.update(manifest_changes or {})
    manifest["sha256"]["weights"] = sha256_of(model / "artifacts" / "weights.pt")
    manifest["files"] = {rel: sha256_of(model / rel) for rel in manifest["files"]}
    manifest["self_sha256"] = self_sha256(manifest)
    path.write_text(json.dumps(manifest))
    return model


def _first(state, change):
    name = next(iter(state))
    state[name] = change(state[name])
    return state


@pytest.mark.parametrize(
    ("manifest", "weights", "expected"),
    [
        ({"threshold": int("9" * 400)}, None, "threshold"),
        ({"n_inputs": 10**13}, None, "n_inputs"),
        ({"n_inputs": 3}, None, "the preprocessing gives"),
        ({"positive_label": ""}, None, "positive_label"),
        ({"numeric_columns": ["num1", "num1"]}, None, "not unique"),
        (None, lambda s: _first(s, lambda t: t.to_sparse()), "dense"),
        (None, lambda s: _first(s, lambda t: torch.full_like(t, float("nan"), dtype=torch.complex64)), "dtype"),
        (None, lambda s: _first(s, lambda t: t.double()), "dtype float64"),
        (None, lambda s: _first(s, lambda t: t[:1]), "of shape"),
        (None, lambda s: {**s, "extra.weight": torch.zeros(1)}, "unexpected"),
    ],
)
def test_every_manifest_field_and_tensor_is_validated(tiny, tmp_path, manifest, weights, expected):
    model = _resigned(tiny, tmp_path, manifest, weights)
    refused(["predict", model, tiny["test"], "-o", tmp_path / "o.csv"], [tmp_path], expected)


def test_a_meta_device_tensor_is_refused():
    from search.model.manifest_check import check_tensors

    net = torch.nn.Linear(3, 1)
    state = {name: t.to("meta") if name == "weight" else t for name, t in net.state_dict().items()}
    with pytest.raises(LosstuneError, match="'meta' device"):
        check_tensors(state, net, "weights.pt")


# ---------------------------------------------------------------- 7. the served model and predict agree


def test_the_served_model_reads_a_frame_as_predict_reads_the_file(tmp_path):
    import mlflow.pyfunc
    import yaml

    paths = make_model_dir(tmp_path)
    frame = synthetic_frame(n=200, seed=3, missing=True)
    frame.insert(0, "row_id", [f"R{i:04d}" for i in range(len(frame))])
    # codes 000 .. 012, and a few letter codes in training only: a categorical column whose test file pandas reads
    # as integers (7 for "007")
    frame["code"] = [f"{(i * 7) % 13:03d}" if i % 3 or i >= 150 else f"X{i % 5}" for i in range(len(frame))]
    frame["num2"] = frame["num2"].astype(object)
    frame.loc[frame.index % 17 == 0, "num2"] = "?"
    frame.iloc[:150].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[150:].drop(columns=["label"]).to_csv(tmp_path / "test.csv", index=False)
    config = yaml.safe_load(paths["best"].read_text())
    config["data"]["na_values"] = ["?"]
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(config))
    shutil.rmtree(paths["model"])
    train = ["train", str(tmp_path / "best.yaml"), "-o", str(tmp_path / "m"), "--no-track"]
    assert run_cli(train, [tmp_path], new_outputs=(tmp_path / "m",)).rc == 0
    out = tmp_path / "o.csv"
    argv = ["predict", str(tmp_path / "m"), str(tmp_path / "test.csv"), "-o", str(out), "--proba"]
    assert run_cli(argv, [tmp_path], new_outputs=(out,)).rc == 0
    test = pd.read_csv(tmp_path / "test.csv")
    assert test["code"].dtype.kind == "i" and test["num2"].dtype.kind != "f"  # what breaks a naive served model
    served = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(test)
    cli = pd.read_csv(out)
    assert (served["proba"].to_numpy() - cli["proba"].to_numpy()).__abs__().max() < 1e-6
    assert (served["label"].to_numpy() == cli["label"].to_numpy()).all()


# ---------------------------------------------------------------- 8. valid data that crashed


def test_constant_all_missing_in_a_fold_and_single_category_columns_train(tmp_path):
    frame = synthetic_frame(n=300, seed=5, missing=False)
    frame["once"] = ""
    frame.loc[7, "once"] = "5"  # one value among 300 rows: all missing in most folds' training rows
    frame["rare_cat"] = ""
    frame.loc[11, "rare_cat"] = "q"
    frame["constant"] = 1.0
    frame["one_category"] = "k"
    frame.to_csv(tmp_path / "d.csv", index=False)
    argv = ["evaluate", "--data", str(tmp_path / "d.csv"), "--target", "label", "--folds", "5", "--epochs", "2"]
    outcome = run_cli([*argv, "--json"], [tmp_path])
    assert outcome.rc == 0, outcome.err
    assert json.loads(outcome.out)["n_rows"] == 300


# ---------------------------------------------------------------- 9. nothing written on a refusal


def test_a_damaged_mlflow_database_is_refused_before_the_optuna_database_is_created(tmp_path):
    study = tiny_study(tmp_path, "dmg", budget=1)
    (tmp_path / "mlflow.db").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    refused(["search", study, "--no-progress"], [tmp_path], "is damaged")
    assert not (tmp_path / "dmg.optuna.db").exists()


# ---------------------------------------------------------------- 10. a tracking server that does not answer


def _server(reply: bytes | None) -> tuple[int, socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if reply is None:
                held.append(conn)  # accepted, never answered
            else:
                conn.recv(65536)
                conn.sendall(reply)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], server


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (None, "no answer within 0.5 s"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "HTTP 503"),
    ],
)
def test_a_tracking_server_that_does_not_answer_is_one_line_in_seconds(reply, expected):
    from search.tracking.mlflow_locations import check_tracking_reachable

    port, server = _server(reply)
    try:
        start = time.monotonic()
        with pytest.raises(LosstuneError, match=expected) as info:
            check_tracking_reachable(f"http://127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - start < 10 and "\n" not in str(info.value)
    finally:
        server.close()


# ---------------------------------------------------------------- 11. smaller points


def test_formula_like_ids_are_written_as_text(tiny, tmp_path):
    frame = pd.read_csv(tiny["test"], dtype=str)
    frame.loc[0, "row_id"] = '=HYPERLINK("http://x","y")'
    frame.loc[1, "row_id"] = "+cmd|' /C calc'!A0"
    frame.loc[2, "row_id"] = "-5"
    frame.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "o.csv"
    assert run_cli(["predict", str(tiny["model"]), str(tmp_path / "t.csv"), "-o", str(out)], [tmp_path], (out,)).rc == 0
    ids = pd.read_csv(out, dtype=str)["row_id"].tolist()
    assert ids[0].startswith("'=") and ids[1].startswith("'+") and ids[2] == "-5"


def test_an_environment_variable_in_the_storage_url_is_not_shown(tmp_path, monkeypatch):
    from search.study.study_file import load_study_file

    monkeypatch.setenv("LT_SECRET_DIR", str(tmp_path))
    monkeypatch.delenv("LOSSTUNE_STORAGE", raising=False)
    study = tiny_study(tmp_path, "env", budget=1, extra="storage: sqlite:///${LT_SECRET_DIR}/env.db")
    file = load_study_file(study)
    assert str(tmp_path) in file.storage_url and file.storage_shown == "sqlite:///${LT_SECRET_DIR}/env.db"


def test_interval_variables_are_checked_before_any_store_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("LOSSTUNE_HEARTBEAT_SECONDS", "40")  # not shorter than the default grace period
    study = tiny_study(tmp_path, "beats", budget=0)
    refused(["search", study, "--no-progress"], [tmp_path], "must be longer than the heartbeat")
