"""Grad-CAM: where in the beat a trained network looks, one value per beat sample in [0, 1].

The class score (the logit of the ``predictions`` layer, before its softmax) is differentiated
with a ``GradientTape`` with respect to the maps of the deepest convolution whose maps still have
at least 16 positions, 4 per axis: ``block4_conv3`` for 187-sample beats (24 positions; block
5 has 12, one per 16 samples), ``block3_conv3`` for 14 x 14 folded beats, ``block5_conv3`` for
64 x 64 Gramian fields. Another layer can be named. The gradients, averaged over positions,
weight the maps; their ReLU is the class activation map, which is mapped back to beat samples:
linearly for 1D, through the fold (row by row) or the Gramian field (a segment's row and column)
for 2D. A fold ensemble's map is the mean of its members'. Rhythm values (after the beat samples) get no map: they skip the
convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecgvgg.core.contract import InputContract
from ecgvgg.core.rows import samples_per_channel
from ecgvgg.core.shapes import fold_side


@dataclass
class Explanation:
    """Grad-CAM of some beats: saliency per beat sample, the class explained and the model's probabilities."""

    saliency: np.ndarray  # (n, beat samples), each row scaled to [0, 1]
    class_index: np.ndarray  # (n,) index of the explained class among the model's outputs
    probs: np.ndarray | None  # (n, classes); None when the classes to explain were given


@dataclass
class ClassSaliency:
    """Per class: how many beats, their summed beat and summed saliency (sums pool over folds)."""

    names: list[str]
    counts: np.ndarray
    beat_sum: np.ndarray
    saliency_sum: np.ndarray

    @classmethod
    def of(cls, beats: np.ndarray, explained: Explanation, names: Sequence[str]) -> ClassSaliency:
        """Group explained beats by the class explained."""
        c, length = len(names), explained.saliency.shape[1]
        onehot = np.eye(c, dtype=np.float64)[explained.class_index]
        return cls(
            list(names),
            onehot.sum(axis=0),
            onehot.T @ np.asarray(beats, np.float64)[:, :length],
            onehot.T @ explained.saliency.astype(np.float64),
        )

    def __add__(self, other: ClassSaliency) -> ClassSaliency:
        return ClassSaliency(
            self.names, self.counts + other.counts, self.beat_sum + other.beat_sum, self.saliency_sum + other.saliency_sum
        )

    def mean(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """The mean beat and mean saliency of class ``c`` (zeros without beats)."""
        n = max(float(self.counts[c]), 1.0)
        return self.beat_sum[c] / n, self.saliency_sum[c] / n


def target_layer(model: Any) -> str:
    """The layer whose maps Grad-CAM weighs: the deepest convolution (after its ReLU) whose maps have at least
    16 positions, 4 per axis; a coarser map locates nothing finer than a sixteenth of the beat."""
    from keras import layers

    convs = [layer for layer in model.layers if isinstance(layer, (layers.Conv1D, layers.Conv2D))]
    if not convs:
        raise ValueError(f"model {model.name} has no convolution layer to explain")
    chosen = next(
        (
            c
            for c in reversed(convs)
            if _cells(c.output.shape[1:-1]) >= 16 and all(d is None or d >= 4 for d in c.output.shape[1:-1])
        ),
        convs[0],
    )
    names = {layer.name for layer in model.layers}
    return f"{chosen.name}_relu" if f"{chosen.name}_relu" in names else chosen.name


def _cells(shape: Sequence[int | None]) -> int:
    """Positions in a map of this shape (an unknown size counts as large)."""
    return int(np.prod([1 << 20 if d is None else d for d in shape]))


def members(model: Any) -> list[Any]:
    """The networks inside a fold ensemble, or ``[model]`` for a single network."""
    import keras

    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner or [model]


def gradcam(
    model: Any,
    X: np.ndarray,
    contract: InputContract,
    *,
    class_index: np.ndarray | None = None,
    layer: str | None = None,
    batch_size: int = 256,
) -> Explanation:
    """Grad-CAM of raw rows ``X`` (beat samples, then rhythm values) for the predicted class (or ``class_index``,
    then without predicting), on ``layer`` (default :func:`target_layer`) of each network; one value per
    sample of a beat (the channels of a several-channel beat share its time axis)."""
    X = np.asarray(X, dtype=np.float32)
    shaped = contract.shape(X)
    beat_length = samples_per_channel(X.shape[1], len(contract.rhythm_columns), len(contract.channels))
    probs = None
    if class_index is None:
        probs = np.asarray(model.predict(shaped, batch_size=batch_size, verbose=0), dtype=np.float32)
    chosen = np.asarray(class_index, dtype=np.int64) if probs is None else np.argmax(probs, axis=1)
    nets = members(model)
    total = np.zeros((len(X), beat_length), dtype=np.float32)
    for net in nets:
        cam_of = _cam_function(net, layer)
        for start in range(0, len(X), batch_size):
            part = slice(start, start + batch_size)
            maps = cam_of(shaped[part], chosen[part])
            total[part] += _scaled(_to_samples(maps, beat_length, contract.input))
    return Explanation(_scaled(total / len(nets)), chosen, probs)


def _cam_function(net: Any, layer: str | None) -> Any:
    """A function of (shaped beats, class indices) to class activation maps at the network's resolution."""
    import keras
    import tensorflow as tf

    try:
        maps_layer = net.get_layer(layer or target_layer(net))
    except ValueError:
        raise ValueError(f"the model has no layer {layer!r} to explain (its convolutions are named blockB_convI)") from None
    head = net.get_layer("predictions")
    dense = isinstance(head, keras.layers.Dense)
    probe = keras.Model(net.inputs, [maps_layer.output, head.input if dense else head.output])

    def cams(x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        with tf.GradientTape() as tape:
            maps, top = probe(tf.convert_to_tensor(x), training=False)
            maps, top = tf.cast(maps, tf.float32), tf.cast(top, tf.float32)
            if dense:  # the logit, not the saturating softmax
                scores = tf.matmul(top, tf.cast(head.kernel, tf.float32)) + tf.cast(head.bias, tf.float32)
            else:
                scores = tf.math.log(top + 1e-7)
            score = tf.gather(scores, tf.convert_to_tensor(classes, dtype=tf.int64), batch_dims=1)
        grads = tape.gradient(score, maps)
        axes = list(range(1, len(maps.shape) - 1))
        weights = tf.reduce_mean(grads, axis=axes, keepdims=True)
        return tf.nn.relu(tf.reduce_sum(weights * maps, axis=-1)).numpy()

    return cams


def _spread(size: int, positions: int) -> np.ndarray:
    """Linear interpolation from ``positions`` map cells (centred on their spans) to ``size`` samples, as a matrix."""
    centres = (np.arange(positions) + 0.5) * size / positions - 0.5
    return np.stack([np.interp(np.arange(size), centres, np.eye(positions)[i]) for i in range(positions)], axis=1)


def _to_samples(maps: np.ndarray, length: int, shape: dict[str, Any]) -> np.ndarray:
    """Class activation maps ``(n, positions)`` or ``(n, h, w)`` as one value per beat sample ``(n, length)``."""
    if maps.ndim == 2:
        return maps @ _spread(length, maps.shape[1]).T
    if shape.get("method", "fold") == "fold":
        side = shape.get("size") or fold_side(length)
        image = _spread(side, maps.shape[1]) @ maps @ _spread(side, maps.shape[2]).T
        return image.reshape(len(maps), side * side)[:, :length]
    size = min(shape.get("size") or 64, length)
    image = _spread(size, maps.shape[1]) @ maps @ _spread(size, maps.shape[2]).T
    segment = (image.mean(axis=1) + image.mean(axis=2)) / 2  # a segment is row i and column i of the field
    if size >= length:
        return segment
    edges = np.linspace(0, length, size + 1).round().astype(int)
    return segment[:, np.searchsorted(edges, np.arange(length), side="right") - 1]


def _scaled(values: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1] (a constant row becomes zeros)."""
    low = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - low
    return np.where(span > 0, (values - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def pick_rows(classes: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Up to ``per_class`` rows of each class, drawn at random (seeded), in table order."""
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(classes == c), min(per_class, int(np.sum(classes == c))), replace=False)
        for c in np.unique(classes)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
