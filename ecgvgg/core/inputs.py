"""tf.data input pipelines: training batches from arrays in memory or streamed from Parquet, and
batches of beats for prediction."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from ecgvgg.core.augment import Augment, augment_batch

log = logging.getLogger("ecgvgg")


def epoch_counts(counts: Mapping[int, int], max_per_class: int | None) -> dict[int, int]:
    """Rows of each class that one epoch draws: all of them, or at most ``max_per_class`` (class-balanced epochs)."""
    return {int(c): min(int(n), max_per_class) if max_per_class else int(n) for c, n in counts.items()}


def make_dataset(
    X: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    augment: Augment | None = None,
    num_classes: int | None = None,
    max_per_class: int | None = None,
    proportions: Mapping[int, float] | None = None,
    steps: int | None = None,
    groups: np.ndarray | None = None,
) -> tf.data.Dataset:
    """A prefetched tf.data pipeline over in-memory arrays; shuffling permutes indices, not rows.

    ``augment`` (training data only) is applied per batch, see :mod:`ecgvgg.core.augment`. With
    ``num_classes`` the labels are one-hot (needed by mixup, label smoothing and focal loss). With
    ``max_per_class`` each pass over the dataset (each epoch) draws at most that many rows of every
    class afresh, in random order. With ``proportions`` ({class: share}) an epoch of ``len(X)``
    rows is drawn from one endless shuffled stream per class, each row's class chosen with those
    shares (``tf.data.Dataset.sample_from_datasets``): class-balanced batches without copies, and
    ``steps`` batches an epoch instead of ``len(X)`` rows. Streamed rows (:class:`ecgvgg.core.stream.Rows`)
    go through :func:`streamed_batches`. With ``groups`` (a code per row) the batches are
    ``((x, codes), label)``, for :class:`ecgvgg.core.adversary.SubjectInvariant`.
    """
    spec = augment or Augment()
    if spec.mixup and not num_classes:
        raise ValueError("mixup needs one-hot labels: pass num_classes")
    if groups is not None and (spec.mixup or not isinstance(X, np.ndarray)):
        raise ValueError("row groups go with in-memory rows without mixup")
    if not isinstance(X, np.ndarray):
        return _finish(
            streamed_batches(X, np.asarray(y), batch_size, seed=seed, proportions=proportions, steps=steps), spec, num_classes
        )
    if proportions:
        idx = _balanced_rows(np.asarray(y), proportions, seed, steps * batch_size if steps else len(y))
    elif max_per_class is not None:
        from ecgvgg.core.resampling import cap_per_class

        rng, rows, labels = np.random.default_rng(seed), np.arange(len(y)), np.asarray(y)

        def epoch_rows():
            yield rng.permutation(cap_per_class(rows, labels, max_per_class, rng))

        per_epoch = sum(epoch_counts(dict(enumerate(np.bincount(labels))), max_per_class).values())
        idx = tf.data.Dataset.from_generator(epoch_rows, output_signature=tf.TensorSpec([None], tf.int64)).unbatch()
        idx = idx.apply(tf.data.experimental.assert_cardinality(per_epoch))  # Keras then knows an epoch's steps
    else:
        idx = tf.data.Dataset.range(len(X))
        if shuffle:
            idx = idx.shuffle(len(X), seed=seed, reshuffle_each_iteration=True)
    arrays = (X, np.asarray(y)) if groups is None else (X, np.asarray(y), np.asarray(groups, dtype=np.int32))
    return _finish(idx.batch(batch_size).map(_gather(arrays), num_parallel_calls=tf.data.AUTOTUNE), spec, num_classes)


def _gather(arrays: tuple[np.ndarray, ...]) -> Any:
    """A function from a batch of row numbers to those rows of each of ``arrays``, gathered by NumPy: the arrays
    stay where they are (a tensor captured by a tf.data function would be copied, and again when the pipeline
    is optimised, about three times the table in all)."""
    dtypes = tuple(tf.as_dtype(a.dtype) for a in arrays)

    def gather(rows: tf.Tensor) -> tuple[tf.Tensor, ...]:
        parts = tf.numpy_function(lambda i: tuple(a[i] for a in arrays), [rows], dtypes, stateful=False)
        for part, a in zip(parts, arrays):
            part.set_shape((None, *a.shape[1:]))
        return tuple(parts)

    return gather


def _finish(batches: tf.data.Dataset, spec: Augment, num_classes: int | None) -> tf.data.Dataset:
    """One-hot labels (with ``num_classes``) and augmentation of ``(x, label[, codes])`` batches, prefetched;
    codes come out beside the beats, ``((x, codes), label)``."""

    def finish(x: tf.Tensor, labels: tf.Tensor, *codes: tf.Tensor) -> Any:
        if num_classes:
            labels = tf.one_hot(labels, num_classes, dtype=x.dtype)
        x, labels = augment_batch(x, labels, spec) if spec else (x, labels)
        return ((x, codes[0]), labels) if codes else (x, labels)

    return batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


#: Streamed training rows held in memory at most: the smallest classes' rows, while they fit, are read once
#: and then cycled in memory, and the others read from their files pass after pass.
STREAM_CACHE_BYTES = 128 * 2**20


def streamed_batches(
    X: Any,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int = 0,
    proportions: Mapping[int, float] | None = None,
    steps: int | None = None,
    cache_bytes: int = STREAM_CACHE_BYTES,
) -> tf.data.Dataset:
    """``(x, label)`` training batches read from Parquet (``X`` an :class:`ecgvgg.core.stream.Rows`), ``steps`` an epoch
    (default ``len(X)`` rows' worth).

    Each stream visits its files in a fresh random order each pass, shuffles rows within a record
    batch and through a buffer, and repeats without end; with ``proportions`` one stream per class
    is drawn from with those shares (``tf.data.Dataset.sample_from_datasets``). The smallest
    classes' rows, as many as fit in ``cache_bytes`` together, are read once and cycled in memory
    (a rare class drawn often would otherwise be read from every file again and again), so memory
    stays bounded by that size. With several workers each reads only its own files
    (``Rows.for_worker``) and all take the same number of steps.
    """
    from ecgvgg.core.distributed import worker_count, worker_rank

    rank, count = worker_rank(), worker_count()
    classes = sorted(proportions) if proportions else [None]
    parts = [X if c is None else X.subset(y == c) for c in classes]
    mine = [_for_worker(part, rank, count) for part in parts]
    if count > 1:
        files = sorted({f for part in mine for f in part.files_read()})
        log.info(
            "worker %d of %d streams its training rows from %d of %d files: %s",
            rank,
            count,
            len(files),
            len(X.files_read()),
            ", ".join(f.name for f in files),
        )
    sizes = [len(part) * 4 * int(np.prod(X.row_shape)) for part in mine]
    cached, room = set(), cache_bytes
    for k in np.argsort(sizes, kind="stable"):
        if sizes[k] <= room:
            cached.add(int(k))
            room -= sizes[k]
    streams = [_row_stream(part, X, y, seed + 1000 * rank + k, batch_size, k in cached) for k, part in enumerate(mine)]
    rows = (
        streams[0]
        if not proportions
        else tf.data.Dataset.sample_from_datasets(
            streams, weights=[float(proportions[c]) for c in sorted(proportions)], seed=seed + rank
        )
    )
    steps = steps or -(-len(X) // batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # shared by file
    out = rows.take(steps * batch_size).batch(batch_size).apply(tf.data.experimental.assert_cardinality(steps))
    return out.with_options(options)


def _for_worker(X: Any, rank: int, count: int) -> Any:
    """The rows of ``X`` in this worker's files (all of them when alone, or when none of them are in its files)."""
    mine = X.for_worker(rank, count) if count > 1 else X
    return mine if len(mine) else X


def _row_stream(mine: Any, X: Any, y: np.ndarray, seed: int, batch_size: int, cache: bool) -> tf.data.Dataset:
    """Endless shuffled ``(x, label)`` rows of ``mine``, some of the rows ``X`` whose labels are ``y``: read once and
    cycled in memory with ``cache``, else read from their files pass after pass."""
    rng = np.random.default_rng(seed)
    spec = (tf.TensorSpec((None, *X.row_shape), tf.float32), tf.TensorSpec((None,), tf.int64))
    if cache:  # one copy, in NumPy: a tensor captured by a tf.data function is copied again when the pipeline is optimised
        x = np.empty((len(mine), *X.row_shape), dtype=np.float32)
        labels, start = np.empty(len(mine), dtype=np.int64), 0
        for chunk, positions in mine.chunks():
            x[start : start + len(chunk)] = chunk
            labels[start : start + len(chunk)] = y[np.searchsorted(X.positions, positions)]
            start += len(chunk)

        def cycled() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            while True:  # a fresh order each pass, in small gathers (tf.data's shuffle holds ~180 bytes a row number)
                order = rng.permutation(len(labels))
                for lo in range(0, len(order), 4 * batch_size):
                    part = order[lo : lo + 4 * batch_size]
                    yield x[part], labels[part]

        return tf.data.Dataset.from_generator(cycled, output_signature=spec).unbatch()

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for x, positions in mine.chunks(4 * batch_size, rng=rng):  # small reads: little held per stream
            yield x, y[np.searchsorted(X.positions, positions)].astype(np.int64)  # X.positions are sorted: y is in their order

    stream = tf.data.Dataset.from_generator(chunks, output_signature=spec).unbatch()
    return stream.shuffle(4 * batch_size, seed=seed).repeat()


def _balanced_rows(y: np.ndarray, proportions: Mapping[int, float], seed: int, rows: int) -> tf.data.Dataset:
    """Row positions, ``rows`` an epoch, each drawn from its class's endless shuffled stream with these shares."""
    classes = sorted(proportions)
    streams = [
        tf.data.Dataset.from_tensor_slices(np.flatnonzero(y == c).astype(np.int64))
        .shuffle(int(np.sum(y == c)), seed=seed + k, reshuffle_each_iteration=True)
        .repeat()
        for k, c in enumerate(classes)
    ]
    shares = [float(proportions[c]) for c in classes]
    return tf.data.Dataset.sample_from_datasets(streams, weights=shares, seed=seed).take(rows)


def feature_batches(X: Any, batch_size: int) -> tf.data.Dataset:
    """Batches of beats in row order for prediction: from an array, or read from Parquet (:class:`ecgvgg.core.stream.Rows`)."""
    if isinstance(X, np.ndarray):
        return tf.data.Dataset.from_tensor_slices(X).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    spec = tf.TensorSpec((None, *X.row_shape), tf.float32)
    chunks = tf.data.Dataset.from_generator(lambda: (x for x, _ in X.chunks(batch_size)), output_signature=spec)
    batches = chunks.unbatch().batch(batch_size)  # whole batches, so that Keras knows how many
    return batches.apply(tf.data.experimental.assert_cardinality(-(-len(X) // batch_size))).prefetch(tf.data.AUTOTUNE)
