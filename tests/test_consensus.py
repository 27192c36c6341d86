"""Record consensus: a record's beats of one shape and rhythm answer together, each record on its own."""

from __future__ import annotations

import numpy as np
import pytest

from ecgvgg.core.consensus import MIN_BEATS, record_consensus
from ecgvgg.core.rows import relative_rows

LENGTH = 40


def _record(rng: np.random.Generator, normal: int, ectopic: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (beat, its reference, two rhythm values) of one record: narrow upright beats at a steady rate, and
    wide inverted premature ones; and which rows are the ectopic ones."""
    t = np.linspace(-1, 1, LENGTH)
    narrow, wide = np.exp(-(t**2) / 0.01), -0.8 * np.exp(-(t**2) / 0.08)
    kind = np.r_[np.zeros(normal, bool), np.ones(ectopic, bool)]
    beats = np.where(kind[:, None], wide, narrow) + 0.03 * rng.standard_normal((len(kind), LENGTH))
    rhythm = np.where(kind[:, None], [0.6, 1.4], [1.0, 1.0]) + 0.02 * rng.standard_normal((len(kind), 2))
    rows = np.hstack([beats, np.broadcast_to(narrow, beats.shape), rhythm]).astype(np.float32)
    return rows, kind


def test_a_records_odd_calls_follow_the_beats_that_look_and_come_like_them():
    rng = np.random.default_rng(0)
    rows, ectopic = _record(rng, 80, 30)
    probs = np.where(ectopic[:, None], [0.2, 0.8], [0.9, 0.1]).astype(np.float32)
    odd = np.flatnonzero(~ectopic)[:6]
    probs[odd] = [0.35, 0.65]  # six normal beats called ectopic, as a new patient's beats are
    features = relative_rows(rows, channels=2, references=1, rhythm=2)
    out = record_consensus(probs, features, np.zeros(len(rows)), 0.6, 8, rhythm=2)
    assert (out[odd].argmax(axis=1) == 0).all()  # now normal, as the beats like them
    assert (out[ectopic].argmax(axis=1) == 1).all()  # the ectopic beats stay ectopic
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(
        record_consensus(probs, relative_rows(rows, 2, 1, 2), np.zeros(len(rows)), 0.0, 8, rhythm=2), probs
    )


def test_each_record_answers_alone_and_a_short_one_is_left_as_it_is():
    rng = np.random.default_rng(1)
    (a, _), (b, _) = _record(rng, 60, 20), _record(rng, 10, 5)
    assert len(b) < MIN_BEATS
    rows = np.vstack([a, b])
    groups = np.r_[np.full(len(a), "100"), np.full(len(b), "101")]
    probs = rng.dirichlet(np.ones(3), len(rows)).astype(np.float32)
    out = record_consensus(probs, relative_rows(rows, 2, 1, 2), groups, 0.5, 10, rhythm=2)
    np.testing.assert_array_equal(out[len(a) :], probs[len(a) :])  # too short to cluster
    other = probs.copy()
    other[len(a) :] = rng.dirichlet(np.ones(3), len(b))
    again = record_consensus(other, relative_rows(rows, 2, 1, 2), groups, 0.5, 10, rhythm=2)
    np.testing.assert_array_equal(again[: len(a)], out[: len(a)])  # another record's beats change nothing here
    # averaging within clusters only ever narrows how the record's probabilities spread
    assert out[: len(a)].var(axis=0).sum() < probs[: len(a)].var(axis=0).sum()


def test_the_shape_is_each_beat_minus_its_reference_beside_the_rhythm():
    rows = np.arange(2 * (3 + 3 + 3 + 3 + 1), dtype=np.float32).reshape(2, -1)  # two leads, two references, one rhythm
    f = relative_rows(rows, channels=4, references=2, rhythm=1)
    assert f.shape == (2, 3 + 3 + 1)
    np.testing.assert_array_equal(f[:, :6], rows[:, :6] - rows[:, 6:12])
    np.testing.assert_array_equal(f[:, 6], rows[:, 12])
    with pytest.raises(ValueError):
        relative_rows(rows[:, :-1], channels=4, references=2, rhythm=1)  # rows that do not split into channels
