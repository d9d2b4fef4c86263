"""Bytes that are not text, files that are not regular files, YAML with duplicate keys or nesting too deep, and
trials too large for memory: each one line, before anything is read in full or allocated."""

from __future__ import annotations

import logging
import os
import textwrap

import pytest
import torch

from objectives.config import CVConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import DataSpec, iter_table, load_dataset
from objectives.encoding import decode
from objectives.errors import DataError, LosstuneError
from objectives.memory import OutOfMemory, TrialShape, check_trial_memory, estimate_bytes, parameter_count
from search.cli import EXIT_BAD_INPUT, main
from search.formats.validation import parse_yaml
from search.study.study_file import load_study_file

ROWS = "".join(f"{i % 7 / 3:.3f},{'ab'[i % 2]},{'yn'[i % 3 == 0]}\n" for i in range(30))
CSV = "x,c,label\n" + ROWS
JAPANESE = "年齢,地域,購入\n" + "".join(
    f"{20 + i},{'東京大阪'[i % 2 * 2 : i % 2 * 2 + 2]},{'はい' if i % 3 == 0 else 'いいえ'}\n" for i in range(12)
)


def load(path, **kw):
    return load_dataset(DataSpec(path=path, target=kw.pop("target", "label"), **kw))


# --- bytes that are not text --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [b"\x80", b"\xfd", b"\xfe", b"\xff", b"\xa0"], ids=lambda b: b.hex())
def test_invalid_utf8_that_cp932_would_swallow_is_refused(write_text, bad):
    raw = CSV.encode().replace(b",a,", b",a" + bad + b",", 1)  # line 2
    assert raw.decode("cp932")  # Python's cp932 codec accepts it silently: the reason for the strict check
    with pytest.raises(DataError) as exc:
        load(write_text(raw))
    msg = str(exc.value)
    assert "cannot detect the encoding" in msg and "not utf-8" in msg and "not cp932" in msg and "line 2" in msg


def test_explicit_cp932_is_checked_as_strictly(write_text):
    raw = CSV.encode().replace(b",a,", b",a\x80,", 1)
    with pytest.raises(DataError, match="not valid cp932: line 2"):
        load(write_text(raw), encoding="cp932")


def test_nul_byte_is_refused_in_every_encoding(write_text):
    raw = CSV.encode().replace(b",b,", b",b\x00,", 1)  # line 3
    for encoding in (None, "utf-8", "cp932"):
        with pytest.raises(DataError, match="line 3 has a NUL byte"):
            load(write_text(raw), encoding=encoding)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_recognised_and_read(write_text, codec, caplog):
    expected = load(write_text(CSV, name="plain.csv"))
    with caplog.at_level(logging.INFO, logger="objectives.data"):
        ds = load(write_text(CSV.encode(codec), name="wide.csv"))
    assert ds.features.equals(expected.features) and (ds.y == expected.y).all()
    assert any("as utf-16" in r.getMessage() for r in caplog.records)  # says which encoding it read


def test_utf16_japanese_is_read(write_text):
    ds = load(write_text(JAPANESE.encode("utf-16")), target="購入")
    assert ds.categorical_columns == ["地域"] and set(ds.features["地域"]) == {"東京", "大阪"}


def test_a_study_file_names_any_encoding_losstune_reads_and_a_wrong_one_says_where_to_set_it(tmp_path):
    """Each encoding the reader accepts is accepted by a study file too (utf-16 was once refused there), and a
    wrong one's message names data.encoding, the setting a study file's user changes, not only --encoding."""
    (tmp_path / "wide.csv").write_bytes(JAPANESE.encode("utf-16"))
    (tmp_path / "sjis.csv").write_bytes(JAPANESE.encode("cp932"))
    for csv, encoding in (("wide.csv", "utf-16"), ("sjis.csv", "utf-8")):
        (tmp_path / "s.yaml").write_text(
            f"name: enc\ndata: {{path: {csv}, target: 購入, encoding: {encoding}}}\n", encoding="utf-8"
        )
        spec = load_study_file(tmp_path / "s.yaml").data_spec
        if encoding == "utf-16":
            assert set(load_dataset(spec).features["地域"]) == {"東京", "大阪"}
        else:
            with pytest.raises(DataError) as exc:
                load_dataset(spec)
            assert "not valid utf-8" in str(exc.value) and "data.encoding in a study or exported file" in str(exc.value)


def test_utf32_is_refused_by_name(write_text):
    with pytest.raises(DataError, match="UTF-32"):
        load(write_text(CSV.encode("utf-32")))


@pytest.mark.parametrize("encoding", [None, "cp932", "shift_jis"])
def test_cp932_japanese_keeps_working(write_text, encoding, caplog):
    with caplog.at_level(logging.INFO, logger="objectives.data"):
        ds = load(write_text(JAPANESE, encoding="cp932"), target="購入", encoding=encoding)
    assert ds.numeric_columns == ["年齢"] and set(ds.features["地域"]) == {"東京", "大阪"}
    assert any(f"as {encoding or 'cp932'}" in r.getMessage() for r in caplog.records)


def test_missing_target_says_which_encoding_was_read(write_text):
    with pytest.raises(DataError, match=r"not found in data.csv \(read as utf-8\)"):
        load(write_text(CSV), target="y")


def test_decode_is_the_same_in_blocks(tmp_path):
    from objectives.encoding import detect_file

    raw = (JAPANESE * 20000).encode("cp932")  # several blocks, characters split across block edges
    (tmp_path / "j.csv").write_bytes(raw)
    assert detect_file(tmp_path / "j.csv", None) == "cp932" == decode(raw, None, "j.csv")[1]


# --- paths that are not regular files -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dev-zero", "directory", "fifo"])
def test_data_path_that_is_not_a_regular_file_is_never_read(tmp_path, kind):
    path = {"dev-zero": "/dev/zero", "directory": tmp_path, "fifo": tmp_path / "pipe"}[kind]
    if kind == "fifo":
        os.mkfifo(path)  # opening it would block: the check must come first
    for read in (lambda: load(path), lambda: next(iter_table(DataSpec(path=path, target="label"), 10))):
        with pytest.raises(DataError, match=r"directory|not a regular file"):
            read()


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_study_file_that_is_not_a_regular_file(tmp_path, kind):
    path = "/dev/zero" if kind == "dev-zero" else tmp_path / "s.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(LosstuneError, match="not a regular file"):
        load_study_file(path)


# --- YAML: duplicate keys, nesting ---------------------------------------------------------------------------

STUDY = """\
name: dup
data: {path: data.csv, target: label}
budget: {trials_per_week: 10}
model: {hidden: [8]}
budget: {trials_per_week: 1000}
"""


def test_duplicate_key_in_a_study_file_names_it_and_both_lines(tmp_path, capsys):
    (tmp_path / "data.csv").write_text(CSV)
    (tmp_path / "s.yaml").write_text(STUDY)
    rc = main(["search", str(tmp_path / "s.yaml"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1
    assert "duplicate key 'budget' (line 3 and line 5)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "s.yaml"]  # nothing written


@pytest.mark.parametrize(
    "text",
    ["a: 1\nb:\n  c: 2\n  c: 3\n", "{a: 1, a: 2}\n", "- {x: 1, y: 2, x: 3}\n"],
    ids=["nested-block", "flow", "in-list"],
)
def test_duplicate_keys_anywhere(text):
    with pytest.raises(LosstuneError, match="duplicate key"):
        parse_yaml(text, "f.yaml")


def test_anchors_and_merge_keys_still_work():
    assert parse_yaml("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n", "f.yaml") == {"a": {"b": 1}, "c": {"b": 1, "d": 2}}


@pytest.mark.parametrize(
    "nested",
    [" " + "[" * 20000 + "]" * 20000, "\n" + "- " * 20000 + "1", " " + "{a: " * 20000 + "1" + "}" * 20000],
    ids=["flow-list", "block", "flow-map"],
)
def test_deep_nesting_is_one_line(tmp_path, capsys, nested):
    (tmp_path / "s.yaml").write_text("name: deep\nplan:" + nested + "\n")
    rc = main(["search", str(tmp_path / "s.yaml")])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and "nested too deeply" in err


def test_exported_config_with_duplicate_key_or_deep_nesting(tmp_path, capsys):
    for name, text in (
        ("dup.yaml", "format_version: 1\nthreshold: 0.5\nthreshold: 0.6\n"),
        ("deep.yaml", "format_version: 1\nloss: " + "[" * 20000 + "]" * 20000 + "\n"),
    ):
        (tmp_path / name).write_text(text)
        rc = main(["train", str(tmp_path / name), "-o", str(tmp_path / "m"), "--no-track"])
        err = capsys.readouterr().err
        assert rc == EXIT_BAD_INPUT and err.count("\n") == 1
        assert ("duplicate key 'threshold' (line 2 and line 3)" if name == "dup.yaml" else "nested too deeply") in err


# --- memory ------------------------------------------------------------------------------------------------


def test_parameter_count_matches_the_network():
    from objectives.model import MLP

    net = MLP(7, ModelConfig(hidden=(5, 3)))
    assert parameter_count(7, (5, 3)) == sum(p.numel() for p in net.parameters())


def test_estimate_grows_with_the_network_and_the_data():
    small = estimate_bytes(TrialShape(1000, 10, (128, 64), 5, 256))
    assert small < 50e6
    assert estimate_bytes(TrialShape(1000, 10, (65536, 65536), 5, 256)) > 4 * 65536**2 * 4 * 5
    assert estimate_bytes(TrialShape(10**6, 10, (128,), 5, 256)) > 5 * 10**6 * 10 * 4  # the stacked features


def test_network_too_large_for_memory_is_refused_before_training(small_dataset, tmp_path, capsys, write_csv):
    config = TrialConfig(
        model=ModelConfig(hidden=(65536, 65536, 65536)), cv=CVConfig(folds=3), train=TrainConfig(device="cpu")
    )
    with pytest.raises(OutOfMemory, match=r"would need about \d+\.\d GB .* GB is available"):
        check_trial_memory(small_dataset, config)
    path = write_csv()
    rc = main(
        ["evaluate", "--data", str(path), "--target", "label", "--hidden", "65536,65536,65536", "--device", "cpu"]
    )
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and "model.hidden" in err


def test_search_refuses_a_too_large_network_before_writing(tmp_path, capsys, write_csv):
    path = write_csv()
    (tmp_path / "s.yaml").write_text(
        textwrap.dedent(f"""\
        name: huge
        data: {{path: {path.name}, target: label}}
        cv: {{folds: 3, seed: 0}}
        model: {{hidden: [65536, 65536, 65536]}}
        train: {{epochs: 1, device: cpu}}
        budget: {{trials_per_week: 1}}
    """)
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["search", str(tmp_path / "s.yaml"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and err.count("\n") == 1 and "would need about" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_ordinary_trial_passes_the_memory_check(small_dataset, fast_config):
    assert check_trial_memory(small_dataset, fast_config) < 10e6


@pytest.mark.parametrize("block", [1, 5, 1 << 20])
def test_undecodable_byte_is_named_with_its_offset_and_line_whatever_the_blocks(block):
    from objectives.encoding import decoded_blocks

    raw = ("a,b\n" * 10 + "é,1\n").encode() + b"x\xffy\n"  # the 0xff: byte 46 (é is 2 bytes), line 12
    blocks = [raw[i : i + block] for i in range(0, len(raw), block)]
    with pytest.raises(DataError, match=r"byte 46 \(0xff\) on line 12"):
        list(decoded_blocks(blocks, "utf-8", "f.csv"))


def test_exported_config_write_failing_leaves_no_tmp_and_the_old_file(tmp_path, monkeypatch):
    from search.formats import atomic_write
    from search.model.exported_config import dump_exported, load_exported
    from tests.model_fixture import make_model_dir

    paths = make_model_dir(tmp_path)
    config = load_exported(paths["best"])
    before = paths["best"].read_bytes()
    listing = sorted(tmp_path.iterdir())
    real = atomic_write.os.fdopen

    def full_disk(fd, *args, **kwargs):  # the file's first write fails as on a full disk, after a partial write
        f = real(fd, *args, **kwargs)

        def write(text):
            f.buffer.write(b"partial") if hasattr(f, "buffer") else None
            raise OSError(28, "No space left on device")

        f.write = write
        return f

    monkeypatch.setattr(atomic_write.os, "fdopen", full_disk)
    with pytest.raises(LosstuneError, match="No space left on device"):
        dump_exported(config, paths["best"])
    assert paths["best"].read_bytes() == before and sorted(tmp_path.iterdir()) == listing


def test_on_a_gpu_the_free_device_memory_is_the_limit(monkeypatch):
    from objectives.memory import check_fits

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2 * 10**9, 80 * 10**9))
    shape = TrialShape(10_000, 20, (8192, 8192), 5, 256)  # about 5.4 GB of parameters and Adam state
    with pytest.raises(OutOfMemory, match=r"but 2\.0 GB is available on the GPU"):
        check_fits(shape, "cuda")
    assert check_fits(TrialShape(10_000, 20, (64,), 5, 256), "cuda") < 2 * 10**9
