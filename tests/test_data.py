"""Reading a user's CSV: encodings, separators, missing values, ID columns, the target, and every refusal."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from objectives.data import (
    Dataset,
    DataSpec,
    check_folds,
    fingerprint_bytes,
    load_dataset,
    read_table,
)
from objectives.errors import DataError, LosstuneError
from tests.conftest import synthetic_frame


def load(path, **kw) -> Dataset:
    return load_dataset(DataSpec(path=path, target=kw.pop("target", "label"), **kw))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert isinstance(exc.value, LosstuneError)
    return msg


# --- encodings and separators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_reads_utf8_with_and_without_bom(write_csv, encoding, frame_factory):
    df = frame_factory(n=60)
    df = df[["label", "num1", "num2", "color"]]  # target first: a BOM would otherwise stick to its name
    ds = load(write_csv(df, encoding=encoding))
    assert ds.n_rows == 60
    assert ds.positive_label == "yes" and ds.negative_label == "no"
    assert ds.y.tolist() == (df["label"] == "yes").astype(int).tolist()
    assert ds.numeric_columns == ["num1", "num2"]
    assert ds.categorical_columns == ["color"]
    assert list(ds.features.columns) == ["num1", "num2", "color"]


def test_bom_with_explicit_utf8_encoding(write_csv, frame_factory):
    df = frame_factory(n=30)[["label", "num1", "color"]]
    ds = load(write_csv(df, encoding="utf-8-sig"), encoding="utf-8")
    assert ds.y.sum() == (df["label"] == "yes").sum()


JAPANESE = "年齢,地域,会員,購入\n" + "".join(
    f"{age},{region},{member},{bought}\n"
    for age, region, member, bought in [
        (34, "東京", "一般", "いいえ"),
        (51, "大阪", "プレミアム", "はい"),
        (29, "東京", "一般", "いいえ"),
        (45, "名古屋", "一般", "いいえ"),
        (38, "大阪", "プレミアム", "はい"),
        (62, "東京", "一般", "いいえ"),
        (23, "福岡", "一般", "いいえ"),
    ]
)


@pytest.mark.parametrize("given_encoding", [None, "cp932"])
def test_reads_cp932_with_japanese_names_and_categories(write_text, given_encoding):
    path = write_text(JAPANESE, encoding="cp932")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")  # really not utf-8: detection has to work
    ds = load(path, target="購入", encoding=given_encoding)
    assert ds.positive_label == "はい"  # the minority
    assert ds.negative_label == "いいえ"
    assert ds.y.tolist() == [0, 1, 0, 0, 1, 0, 0]
    assert ds.numeric_columns == ["年齢"]
    assert ds.categorical_columns == ["地域", "会員"]
    assert ds.features["地域"].tolist() == ["東京", "大阪", "東京", "名古屋", "大阪", "東京", "福岡"]
    assert ds.features["年齢"].tolist() == [34.0, 51.0, 29.0, 45.0, 38.0, 62.0, 23.0]


def test_cp932_with_explicit_positive(write_text):
    ds = load(write_text(JAPANESE, encoding="cp932"), target="購入", positive="いいえ")
    assert ds.positive_label == "いいえ"
    assert ds.y.tolist() == [1, 0, 1, 1, 0, 1, 1]


def test_cp932_read_as_utf8_is_a_data_error(write_text):
    with pytest.raises(DataError) as exc:
        load(write_text(JAPANESE, encoding="cp932"), target="購入", encoding="utf-8")
    assert "cp932" in _one_line(exc)


@pytest.mark.parametrize("encoding", ["latin-99", "rot13", "hex", "utf-32"])
def test_an_unsupported_encoding_is_refused_where_it_is_given(write_csv, encoding):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=f"encoding '{encoding}' is not supported"):
        load(write_csv(), encoding=encoding)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_separator_is_detected(write_csv, sep, frame_factory):
    df = frame_factory(n=40)
    ds = load(write_csv(df, sep=sep))
    assert ds.numeric_columns == ["num1", "num2"]
    assert ds.categorical_columns == ["color"]
    assert ds.y.tolist() == (df["label"] == "yes").astype(int).tolist()
    np.testing.assert_array_equal(ds.features["num2"].to_numpy(), df["num2"].to_numpy())


def test_semicolon_with_commas_inside_values(write_text):
    text = "num;city;label\n1;Paris, FR;a\n2;Oslo, NO;b\n3;Paris, FR;a\n4;Rome, IT;a\n5;Oslo, NO;b\n"
    ds = load(write_text(text))
    assert ds.features["city"].tolist() == ["Paris, FR", "Oslo, NO", "Paris, FR", "Rome, IT", "Oslo, NO"]
    assert ds.positive_label == "b"


def test_explicit_separator(write_csv, frame_factory):
    ds = load(write_csv(frame_factory(n=30), sep=";"), sep=";")
    assert ds.n_rows == 30 and ds.numeric_columns == ["num1", "num2"]


# --- missing values, IDs, the target ---------------------------------------------------------------------------


def test_blank_and_whitespace_cells_are_missing(write_text):
    text = "num,cat,label\n1.5, a ,0\n   ,b,1\n3.0,   ,0\n,\t,1\n2.0,a,0\n"
    ds = load(write_text(text))
    assert ds.numeric_columns == ["num"]
    assert ds.categorical_columns == ["cat"]
    num = ds.features["num"]
    assert num.dtype == np.float64
    assert num.isna().tolist() == [False, True, False, True, False]
    assert ds.features["cat"].isna().tolist() == [False, False, True, True, False]
    assert ds.features["cat"][0] == "a"  # surrounding spaces are not part of the category


def test_id_like_column_is_excluded_with_a_warning(write_csv, caplog, frame_factory):
    df = frame_factory(n=50)
    df.insert(0, "customer_id", [f"C{i:05d}" for i in range(50)])
    with caplog.at_level(logging.WARNING, logger="objectives.data"):
        ds = load(write_csv(df))
    assert ds.excluded_columns == ["customer_id"]
    assert "customer_id" not in ds.features.columns
    assert ds.categorical_columns == ["color"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "customer_id" in warnings[0].getMessage()


def test_default_positive_is_the_minority_class(write_csv, frame_factory):
    df = frame_factory(n=50, positive_rate=0.2)
    ds = load(write_csv(df))
    assert ds.positive_label == "yes"
    assert ds.y.sum() == 10
    # and the other way round: when "no" is the minority it becomes the positive
    df["label"] = df["label"].map({"yes": "no", "no": "yes"})
    ds = load(write_csv(df, name="flipped.csv"))
    assert ds.positive_label == "no" and ds.y.sum() == 10
    assert ds.y.dtype == np.int8
    assert ds.positive_rate == pytest.approx(0.2)


def test_numeric_target_minority_and_explicit_positive(write_text):
    text = "x,t\n" + "".join(f"{i},{int(i % 3 == 0)}\n" for i in range(12))  # 4 ones, 8 zeros
    path = write_text(text)
    ds = load(path, target="t")
    assert ds.positive_label == "1" and ds.y.sum() == 4
    ds = load(path, target="t", positive="0")
    assert ds.positive_label == "0" and ds.negative_label == "1"
    assert ds.y.tolist() == [int(i % 3 != 0) for i in range(12)]


def test_explicit_positive_label(write_csv, frame_factory):
    df = frame_factory(n=40)
    ds = load(write_csv(df), positive="no")
    assert ds.positive_label == "no" and ds.negative_label == "yes"
    assert ds.y.tolist() == (df["label"] == "no").astype(int).tolist()


def test_unknown_positive_label(write_csv):
    with pytest.raises(DataError) as exc:
        load(write_csv(), positive="maybe")
    msg = _one_line(exc)
    assert "'maybe'" in msg and "'no'" in msg and "'yes'" in msg


def test_drop_columns(write_csv):
    ds = load(write_csv(), drop=("num2",))
    assert "num2" not in ds.features.columns and ds.numeric_columns == ["num1"]
    with pytest.raises(DataError, match="nope"):
        load(write_csv(name="b.csv"), drop=("nope",))
    with pytest.raises(DataError, match="target"):
        load(write_csv(name="c.csv"), drop=("label",))


# --- refusals -----------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as exc:
        load(tmp_path / "nowhere.csv")
    msg = _one_line(exc)
    assert "not found" in msg and "nowhere.csv" in msg


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(DataError, match="directory"):
        load(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["zero-bytes", "whitespace"])
def test_empty_file(write_text, content):
    with pytest.raises(DataError) as exc:
        load(write_text(content))
    assert "empty" in _one_line(exc)


def test_header_only(write_text):
    with pytest.raises(DataError) as exc:
        load(write_text("num,cat,label\n"))
    assert "no rows" in _one_line(exc)


def test_missing_target(write_csv):
    with pytest.raises(DataError) as exc:
        load(write_csv(), target="churn")
    msg = _one_line(exc)
    assert "'churn'" in msg and "not found" in msg
    assert "num1" in msg and "label" in msg  # lists the columns there are


def test_target_with_one_class(write_csv, frame_factory):
    df = frame_factory(n=20)
    df["label"] = "no"
    with pytest.raises(DataError) as exc:
        load(write_csv(df))
    msg = _one_line(exc)
    assert "exactly 2 classes" in msg and "found 1" in msg


def test_target_with_three_classes(write_csv, frame_factory):
    df = frame_factory(n=21)
    df["label"] = ["a", "b", "c"] * 7
    with pytest.raises(DataError) as exc:
        load(write_csv(df))
    msg = _one_line(exc)
    assert "exactly 2 classes" in msg and "found 3" in msg
    assert all(f"'{v}'" in msg for v in "abc")


def test_target_with_missing_labels(write_text):
    with pytest.raises(DataError) as exc:
        load(write_text("x,label\n1,a\n2,\n3,b\n4,a\n"))
    msg = _one_line(exc)
    assert "missing" in msg and "line 3" in msg


JUNK = "amount,label\n" + "".join(f"{i * 1.5},{'yes' if i % 4 == 0 else 'no'}\n" for i in range(12))
JUNK = JUNK.replace("\n6.0,", "\nunknown,")  # the 5th data row, line 6 of the file


def test_numeric_column_with_junk_names_column_line_value_and_na_value(write_text):
    assert "\nunknown," in JUNK
    with pytest.raises(DataError) as exc:
        load(write_text(JUNK))
    msg = _one_line(exc)
    assert "'amount'" in msg
    assert "line 6" in msg
    assert "'unknown'" in msg
    assert "--na-value 'unknown'" in msg


def test_na_value_makes_the_junk_column_numeric(write_text):
    ds = load(write_text(JUNK), na_values=("unknown",))
    assert ds.numeric_columns == ["amount"]
    assert ds.features["amount"].isna().tolist() == [i == 4 for i in range(12)]
    assert ds.features["amount"][5] == pytest.approx(7.5)


def test_mostly_text_column_stays_categorical(write_text):
    text = "grade,label\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate(["A", "B", "1", "A", "B", "A"]))
    ds = load(write_text(text))
    assert ds.categorical_columns == ["grade"]


def test_all_missing_column(write_csv, frame_factory):
    df = frame_factory(n=20)
    df["empty_col"] = np.nan
    with pytest.raises(DataError) as exc:
        load(write_csv(df))
    msg = _one_line(exc)
    assert "'empty_col'" in msg and "--drop 'empty_col'" in msg


def test_duplicate_column_names(write_text):
    with pytest.raises(DataError) as exc:
        load(write_text("x,y,x,label\n1,2,3,a\n4,5,6,b\n"))
    msg = _one_line(exc)
    assert "duplicate" in msg and "'x'" in msg


def test_duplicate_after_stripping_spaces(write_text):
    with pytest.raises(DataError, match="duplicate"):
        load(write_text("x, x,label\n1,2,a\n4,5,b\n"))


def test_only_id_columns_left(write_text):
    with pytest.raises(DataError, match="no usable feature"):
        load(write_text("id,label\na,0\nb,1\nc,0\n"))


@pytest.mark.parametrize("folds", [5, 10])
def test_check_folds_refuses_fewer_positives_than_folds(write_csv, folds, frame_factory):
    ds = load(write_csv(frame_factory(n=40, positive_rate=0.1)))  # 4 positives
    assert ds.y.sum() == 4
    with pytest.raises(DataError) as exc:
        check_folds(ds, folds)
    msg = _one_line(exc)
    assert "only 4 positive row(s)" in msg and "'yes'" in msg and "--folds 4" in msg
    check_folds(ds, 4)  # exactly enough


def test_check_folds_with_a_single_positive(write_text):
    ds = load(write_text("x,label\n1,a\n2,b\n3,b\n4,b\n"))
    with pytest.raises(DataError) as exc:
        check_folds(ds, 2)
    assert "at least 2 of each class" in _one_line(exc)


# --- fingerprint ------------------------------------------------------------------------------------------------


def test_fingerprint_same_bytes_same_fingerprint(write_csv, tmp_path):
    a = load(write_csv(name="a.csv"))
    b = load(write_csv(name="b.csv"))
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint == fingerprint_bytes((tmp_path / "a.csv").read_bytes())
    assert a.fingerprint.startswith("sha256:")


def test_fingerprint_changes_with_one_byte(write_csv, write_text):
    path = write_csv()
    raw = bytearray(path.read_bytes())
    i = raw.index(b".", 40)  # a decimal point somewhere in the data
    raw[i + 1] = ord("9") if raw[i + 1] != ord("9") else ord("8")
    edited = write_text(bytes(raw), name="edited.csv")
    assert load(edited).fingerprint != load(path).fingerprint
    _, fp = read_table(DataSpec(path=edited, target="label"))
    assert fp == fingerprint_bytes(bytes(raw))


def test_read_table_returns_every_column(write_csv, frame_factory):
    df, _ = read_table(DataSpec(path=write_csv(frame_factory(n=10)), target="label"))
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["num1", "num2", "color", "label"]


@pytest.mark.parametrize("text", ["inf", "-inf", "1e400"])
def test_infinite_numbers_are_refused_not_passed_to_training(write_text, text):
    rows = "".join(f"{i / 3:.4f},{'ab'[i % 2]},{i % 3 == 0}\n" for i in range(12))
    csv = "x,c,label\n" + rows.replace("1.0000,", f"{text},")  # row 3: line 5
    assert text in csv
    with pytest.raises(DataError) as exc:
        load(write_text(csv))
    msg = _one_line(exc)
    assert "'x'" in msg and "infinite" in msg and "line 5" in msg and "--na-value" in msg
    ds = load(write_text(csv, name="ok.csv"), na_values=(text,))
    assert ds.features["x"].isna().tolist() == [i == 3 for i in range(12)]


def test_integer_row_counter_is_kept_with_a_warning_naming_it(write_csv, caplog):
    frame = synthetic_frame(n=60, missing=False)
    frame.insert(0, "ID", range(1, 61))
    frame["count"] = [i % 7 for i in range(60)]  # integers, not distinct: no warning
    with caplog.at_level("WARNING", logger="objectives.data"):
        ds = load_dataset(DataSpec(path=write_csv(frame), target="label"))
    assert "ID" in ds.numeric_columns and "count" in ds.numeric_columns
    warned = [r.getMessage() for r in caplog.records if "counts the rows" in r.getMessage()]
    assert len(warned) == 1 and "'ID'" in warned[0] and "--drop ID" in warned[0]
