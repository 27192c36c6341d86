"""Loading X/y tables from every supported layout, and refusing bad ones with a precise DataError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import BAD
from ecgvgg.core.data import load_beats, load_xy
from ecgvgg.core.errors import DataError


def _mixed(frame: pd.DataFrame, per_class: int) -> pd.DataFrame:
    return frame.groupby("label").head(per_class).reset_index(drop=True)


def _kaggle_csv(frame: pd.DataFrame, path) -> None:
    frame.drop(columns="segment").to_csv(path, header=False, index=False)


def test_parquet_with_label_and_group(sample_xyg, sample_frame):
    X, y, g = sample_xyg
    assert X.shape == (len(sample_frame), 187)
    assert (X.dtypes == np.float32).all()
    assert y.dtype == np.int64 and set(y.unique()) == {0, 1, 2, 3, 4}
    assert g.tolist() == sample_frame["segment"].tolist()
    np.testing.assert_array_equal(X.to_numpy(), sample_frame.filter(like="x").to_numpy())


def test_headerless_kaggle_csv_label_last(sample_frame, tmp_path):
    path = tmp_path / "beats.csv"
    _kaggle_csv(_mixed(sample_frame, 10), path)
    X, y, g = load_xy(path, header=False)
    assert X.shape == (50, 187) and g is None
    assert (X.dtypes == np.float32).all()
    assert y.tolist() == _mixed(sample_frame, 10)["label"].tolist()
    X2, y2, _ = load_xy(path)  # header detected automatically
    pd.testing.assert_frame_equal(X, X2)


def test_csv_with_header_label_and_group(sample_frame, tmp_path):
    path = tmp_path / "beats.csv"
    _mixed(sample_frame, 8).rename(columns={"label": "cls"}).to_csv(path, index=False)
    X, y, g = load_xy(path, label_column="cls", group_column="segment")
    assert X.shape == (40, 187) and g.iloc[0] == "N000"
    assert y.tolist() == _mixed(sample_frame, 8)["label"].tolist()


def test_separate_x_and_y_files(sample_frame, tmp_path):
    _mixed(sample_frame, 6).filter(like="x").to_parquet(tmp_path / "X.parquet")
    _mixed(sample_frame, 6)[["label"]].to_csv(tmp_path / "y.csv", index=False)
    X, y, _ = load_xy(tmp_path / "X.parquet", tmp_path / "y.csv")
    assert X.shape == (30, 187) and len(y) == 30


def test_load_beats_splits_off_the_label(sample_frame, tmp_path):
    path = tmp_path / "beats.csv"
    _kaggle_csv(sample_frame.head(5), path)
    X, others, y = load_beats(path, length=187, header=False, classes=range(5))
    assert X.shape == (5, 187) and list(others.columns) == ["label"] and y.shape == (5,)
    X, others, y = load_beats(BAD / "no_label.parquet", classes=range(5))
    assert X.shape[1] == 187 and y is None


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("empty.csv", {}, r"empty\.csv: file is empty"),
        ("header_in_headerless.csv", {"header": False}, r"header_in_headerless\.csv: line 1 looks like a header row \('x0'\)"),
        ("ragged.csv", {}, r"ragged\.csv: line 5 has 187 columns, expected 188"),
        ("non_numeric.csv", {}, r"non_numeric\.csv: column 10 is not numeric at line 6: 'abc'"),
        ("nan.csv", {}, r"nan\.csv: column 7 has nan at line 3"),
        ("inf.csv", {}, r"inf\.csv: column 7 has inf at line 3"),
        ("label_7.csv", {}, r"label_7\.csv: label column 187 has 7 at line 4, outside the configured classes"),
        ("label_1_5.csv", {}, r"label_1_5\.csv: label column 187 has 1\.5 at line 4; labels must be integers"),
        ("one_class.csv", {}, r"one_class\.csv: all 3 rows have label 0"),
        ("no_label.parquet", {}, r"no_label\.parquet: no label column 'label'"),
        ("labels_0_to_4.csv", {"classes": [0, 1, 2]}, r"has 3 at line 10, outside the configured classes \[0, 1, 2\]"),
    ],
)
def test_bad_inputs_name_file_column_and_row(name, kwargs, expected):
    with pytest.raises(DataError, match=expected):
        load_xy(BAD / name, **kwargs)


def test_x_and_y_of_different_lengths():
    with pytest.raises(DataError, match=r"x_short\.csv: 14 rows of X but .*y_long\.csv has 15 labels"):
        load_xy(BAD / "x_short.csv", BAD / "y_long.csv")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        load_xy(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        load_xy(tmp_path)


def test_missing_group_column_and_unknown_suffix(sample_frame, tmp_path):
    path = tmp_path / "b.parquet"
    sample_frame.head(10).to_parquet(path)
    with pytest.raises(DataError, match=r"no group column 'patient' \(columns: x0"):
        load_xy(path, group_column="patient")
    (tmp_path / "b.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        load_xy(tmp_path / "b.xlsx")


def test_text_column_not_declared_as_group_is_named(sample_frame, tmp_path):
    path = tmp_path / "b.csv"
    sample_frame.head(10).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"column 'segment' is not numeric at line 2: 'N000'"):
        load_xy(path)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_numbered_header_row_as_pandas_writes_it(sample_frame, tmp_path):
    path = tmp_path / "numbered.csv"
    frame = _mixed(sample_frame, 3).drop(columns="segment")
    frame.columns = range(frame.shape[1])
    frame.to_csv(path, index=False)  # header line "0,1,2,...,187"
    with pytest.raises(DataError, match=r"line 1 looks like a header row \('0,1,2,...'\)"):
        load_xy(path, header=False)
    with pytest.raises(DataError, match=r"no label column 'label' \(columns: 0, 1, 2"):
        load_xy(path)
    X, y, _ = load_xy(path, label_column="187")
    assert X.shape == (15, 187) and y.tolist() == frame[187].tolist()


def test_format_overrides_the_suffix(sample_frame, tmp_path):
    path = tmp_path / "beats.dat"
    _mixed(sample_frame, 4).drop(columns="segment").to_csv(path, header=False, index=False)
    with pytest.raises(DataError, match=r"beats\.dat: unknown file type '.dat'"):
        load_xy(path)
    X, y, _ = load_xy(path, format="csv")
    assert X.shape == (20, 187)
    with pytest.raises(DataError, match=r"beats\.dat: cannot read as Parquet"):
        load_xy(path, format="parquet")


def test_a_folder_of_parquet_shards_reads_and_splits_as_the_same_rows_in_one_file(sample_frame, tmp_path):
    from ecgvgg.core.config import PipelineConfig
    from ecgvgg.cli.runner import check

    shards = tmp_path / "shards"
    shards.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(sample_frame)), 4)):
        sample_frame.iloc[part].to_parquet(shards / f"part-{i:02d}.parquet", index=False)
    (shards / "README.txt").write_text("not a shard")
    sample_frame.to_parquet(tmp_path / "one.parquet", index=False)

    def planned(path):
        cfg = PipelineConfig.model_validate({"data": {"path": str(path), "group_column": "segment"}})
        return check(cfg)

    one, folder, pattern = planned(tmp_path / "one.parquet"), planned(shards), planned(shards / "part-*.parquet")
    for other in (folder, pattern):
        np.testing.assert_array_equal(other.data.X, one.data.X)
        np.testing.assert_array_equal(other.data.y, one.data.y)
        assert [tuple(map(list, f)) for f in other.folds] == [tuple(map(list, f)) for f in one.folds]


def test_shards_with_other_columns_are_refused_naming_the_shard(sample_frame, tmp_path):
    sample_frame.head(20).to_parquet(tmp_path / "a.parquet", index=False)
    sample_frame.head(20).drop(columns="x5").to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(DataError, match=r"b\.parquet: its columns .* differ from those of a\.parquet"):
        load_xy(tmp_path, group_column="segment")
    with pytest.raises(DataError, match="matches none"):
        load_xy(tmp_path / "nothing-*.parquet")
