"""Beats streamed from Parquet shards: the same rows, split and scores as in memory, read in record batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import SEED, runner, runs_in, sets
from ecgvgg.core.errors import DataError

STREAM = ["data.stream=true", "resampling.sampler=balanced"]


def _config(path, *items):
    from ecgvgg.core.config import load_config

    return load_config(SEED, [f"data.path={path}", *items])


def test_streamed_rows_are_the_table_rows_read_by_file(shard_folder, mixed_frame):
    from ecgvgg.core.stream import open_shards

    shards, y, groups = open_shards(shard_folder, label_column="label", group_column="segment", classes=range(5))
    X = mixed_frame.filter(like="x").to_numpy(np.float32)
    np.testing.assert_array_equal(y, mixed_frame["label"].to_numpy())
    np.testing.assert_array_equal(groups.names[groups.codes], mixed_frame["segment"].astype(str).to_numpy())
    # what stays in memory is a few bytes a row: one for the label, four for the group, whatever its name
    assert y.itemsize == 1 and groups.codes.itemsize == 4 and list(groups.names) == sorted(groups.names)
    picked = np.random.default_rng(0).choice(len(y), 300, replace=False)  # any order, across shards
    np.testing.assert_array_equal(shards.take(picked), X[picked])
    view = shards[picked]
    got = [(x, rows) for x, rows in view.chunks(64)]
    assert max(len(r) for _, r in got) <= 64
    np.testing.assert_array_equal(np.concatenate([r for _, r in got]), np.sort(picked))  # in row order
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), X[np.sort(picked)])
    halves = [view.for_worker(rank, 2) for rank in (0, 1)]
    assert [f.name for f in halves[0].files_read()] == ["part-00.parquet", "part-02.parquet"]
    assert not set(halves[0].files_read()) & set(halves[1].files_read())  # each file read by one worker
    np.testing.assert_array_equal(np.sort(np.r_[halves[0].positions, halves[1].positions]), np.sort(picked))


def test_a_streamed_shard_folder_plans_the_split_of_the_same_rows_in_one_file(shard_folder):
    from ecgvgg.cli.runner import check

    one_file = shard_folder.parent / "one.parquet"
    streamed, one = check(_config(shard_folder, *STREAM)), check(_config(one_file, *STREAM[1:]))
    assert streamed.data.streamed and not one.data.streamed
    np.testing.assert_array_equal(streamed.data.y, one.data.y)
    assert [tuple(map(list, f)) for f in streamed.folds] == [tuple(map(list, f)) for f in one.folds]


def test_streamed_test_scores_equal_the_in_memory_ones(shard_folder):
    from ecgvgg.core.contract import contract_for
    from ecgvgg.core.folds import materialise
    from ecgvgg.cli.runner import check
    from ecgvgg.core.shapes import reshape
    from ecgvgg.core.results import FoldResult
    from ecgvgg.core.study import _score, build_model
    from ecgvgg.core.training import FitResult, setup_device

    setup_device(seed=0)
    results = []
    for path, items in ((shard_folder.parent / "one.parquet", ()), (shard_folder, STREAM)):
        cfg = _config(path, *items, "model.width=0.0625", "model.dense_units=16", "tracking.gradcam_per_class=0")
        checked = check(cfg)
        fold = checked.folds[0]
        splits = materialise(cfg, checked.data.X, checked.data.y, fold).map_x(lambda a: reshape(a, "1d"))
        if not results:  # one untrained network scores both, so any difference is the scoring's
            model = build_model(cfg, 187)
        fit = FitResult(model, {}, 0, None, None, False, None, val_pred=np.zeros(len(fold.val), np.int64))
        out = FoldResult(
            fold, splits.counts, model, fit, contract_for(cfg, checked.data.features), y_val=splits.y_val, y_test=splits.y_test
        )
        results.append(_score(cfg, checked.data, out, splits))
    memory, streamed = results
    assert streamed.probs is None and streamed.pred is None  # nothing per row is kept
    assert len(set(memory.pred)) > 1  # the network does not predict one class only
    assert streamed.scores == memory.scores
    assert streamed.ci == memory.ci and streamed.reason == memory.reason and streamed.missed == memory.missed
    assert streamed.baseline_macro_f1 == pytest.approx(memory.baseline_macro_f1)


@pytest.mark.parametrize("cache", [0, None], ids=["read pass after pass", "cached"])
def test_the_balanced_sampler_streams_the_asked_class_shares_from_this_workers_files(
    shard_folder, mixed_frame, monkeypatch, cache
):
    import json

    from ecgvgg.core.stream import open_shards
    from ecgvgg.core.inputs import streamed_batches

    shards, y, _ = open_shards(shard_folder, label_column="label", group_column="segment", classes=range(5))
    X = shards[np.arange(len(y))].map(lambda a: np.c_[a, np.zeros((len(a), 1), np.float32)])  # a transform runs
    shares = {0: 0.4, 1: 0.15, 2: 0.15, 3: 0.15, 4: 0.15}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}})
    )
    ds = streamed_batches(X, y, 128, seed=0, proportions=shares, **({} if cache is None else {"cache_bytes": cache}))
    table = mixed_frame.filter(like="x").to_numpy(np.float32)
    values = {row.tobytes(): i for i, row in enumerate(table)}
    labels, rows = [], []
    for _ in range(3):  # three epochs of len(y) draws, in whole batches
        for xb, yb in ds:
            assert xb.shape[1:] == (188,)
            labels.append(yb.numpy())
            rows.append([values[x[:187].tobytes()] for x in xb.numpy()])
    labels, rows = np.concatenate(labels), np.concatenate(rows)
    assert len(labels) == 3 * 128 * -(-len(y) // 128)
    for c, p in shares.items():
        assert abs(np.mean(labels == c) - p) < 4 * np.sqrt(p * (1 - p) / len(labels))  # within sampling error
    assert (y[rows] == labels).all()  # real rows with their own labels
    starts = shards.starts
    assert set(np.searchsorted(starts, rows, side="right") - 1) == {1, 3}  # worker 1 reads files 1 and 3 only


@pytest.mark.parametrize(
    "items,says",
    [
        (
            ["data.stream=true"],
            "resampling.sampler: adasyn needs the whole training table in memory; with data.stream "
            "use resampling.sampler: balanced",
        ),
        ([*STREAM, "split.folds=3"], "split.folds: not available with data.stream"),
    ],
)
def test_streaming_refuses_what_needs_the_table_in_memory(shard_folder, store, items, says):
    res = runner().invoke(
        __import__("ecgvgg.cli.main", fromlist=["app"]).app, ["run", SEED, *sets(f"data.path={shard_folder}", *items)]
    )
    assert res.exit_code == 2 and says in res.output and len(res.output.strip().splitlines()) == 1
    assert runs_in(store) == []


def test_a_bad_value_in_one_shard_is_refused_naming_the_shard_column_and_row(shard_folder, mixed_frame, tmp_path):
    import shutil

    from ecgvgg.core.stream import open_shards

    folder = tmp_path / "shards"
    shutil.copytree(shard_folder, folder)
    bad = mixed_frame.iloc[np.array_split(np.arange(len(mixed_frame)), 4)[2]].copy()
    bad.iloc[7, bad.columns.get_loc("x40")] = np.nan
    bad.to_parquet(folder / "part-02.parquet", index=False)
    with pytest.raises(DataError, match=r"part-02\.parquet: column 'x40' has nan at row 7"):
        open_shards(folder, label_column="label", group_column="segment", classes=range(5))
    bad.assign(x3="a").to_parquet(folder / "part-02.parquet", index=False)
    with pytest.raises(DataError, match=r"part-02\.parquet: column 'x3' is (large_)?string, not numeric"):
        open_shards(folder, label_column="label", group_column="segment", classes=range(5))


def test_the_groups_seen_by_a_model_are_named_without_a_name_per_row():
    from ecgvgg.core.dataset import StudyData

    names = np.array(["100", "101", "102"])
    codes = np.array([2, 0, 2, 1, 0, 2], dtype=np.int32)
    streamed = StudyData(pd.DataFrame(), np.zeros((6, 1)), np.zeros(6), codes, group_names=names)
    in_memory = StudyData(pd.DataFrame(), np.zeros((6, 1)), np.zeros(6), names[codes])
    for data in (streamed, in_memory):
        assert data.distinct_groups(np.array([0, 2]), np.array([3])).tolist() == ["101", "102"]
        assert data.distinct_groups(np.arange(6)).tolist() == ["100", "101", "102"]
