"""Record adaptation: each batch-normalisation layer meets a record's beats on the record's own terms.

A network trained on other patients normalises every convolution's output with statistics of
their beats. A new patient's beats (another lead placement, another heart) shift those outputs, and
a normal beat can land where the network learned abnormal ones. Within each record, each
batch-normalisation layer's statistics move by how the record's inputs to that layer differ from
those of a sample of the training rows (Li et al. 2016, "Revisiting batch normalization for practical
domain adaptation", adapted):

    r = (record variance / training-sample variance) ^ w
    c = training-sample mean + w x (record mean - training-sample mean)
    mean' = c + (mean - training-sample mean) x sqrt(r),   variance' = variance x r

(``variance + eps`` in fact, ``eps`` the layer's own), layer after layer, each measured with the layers
before it adapted. At ``w = 1`` a record's inputs to each layer are mapped onto the training sample's
mean and spread before the trained normalisation: a record at twice the gain answers as at the
training gain. Comparing with a sample of the training rows in their own proportions (mostly normal
beats, as a record is), rather than taking the record's statistics outright, keeps a record's share
of normal beats from reading as a shift. No label is read. Records of fewer than :data:`MIN_BEATS`
beats are left as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Fewer beats than this in a record: too few for its statistics, the network answers as trained.
MIN_BEATS = 20
#: Rows per forward pass.
BATCH = 4096


def batch_norms(model: Any) -> list[Any]:
    """The model's batch-normalisation layers, in the order the beat passes them."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _moments(model: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of ``model``'s output over rows and positions."""
    out = _predict(model, x)
    axes = tuple(range(out.ndim - 1))
    return out.mean(axis=axes, dtype=np.float64), out.var(axis=axes, dtype=np.float64)


def _inputs_of(model: Any) -> list[Any]:
    """One model per batch-normalisation layer: the beat in, that layer's input out."""
    import keras

    return [keras.Model(model.inputs, layer.input) for layer in batch_norms(model)]


def reference_statistics(model: Any, x: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Each batch-normalisation layer's input mean and variance over ``x`` (shaped training rows), by layer name."""
    return {
        layer.name: {"mean": [float(v) for v in mean], "variance": [float(v) for v in var]}
        for layer, (mean, var) in zip(batch_norms(model), (_moments(m, x) for m in _inputs_of(model)))
    }


def record_adapted(
    model: Any, x: np.ndarray, groups: np.ndarray, reference: dict[str, dict[str, list[float]]], weight: float
) -> np.ndarray:
    """Class probabilities of ``x`` (shaped rows), each record (``groups``) answered with its adapted statistics."""
    layers, inputs = batch_norms(model), _inputs_of(model)
    missing = sorted({layer.name for layer in layers} - set(reference))
    if missing:
        raise ValueError(f"no reference statistics for batch-normalisation layers {missing}")
    trained = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    groups = np.asarray(groups)
    out = np.zeros((len(x), int(model.output_shape[-1])), np.float32)
    try:
        for g in np.unique(groups):
            at = np.flatnonzero(groups == g)
            if len(at) >= MIN_BEATS:
                for layer, sub, (mean, var) in zip(layers, inputs, trained):
                    new_mean, new_var = adapted_statistics(
                        mean, var, reference[layer.name], *_moments(sub, x[at]), weight, float(layer.epsilon)
                    )
                    layer.moving_mean.assign(new_mean.astype(mean.dtype))
                    layer.moving_variance.assign(new_var.astype(var.dtype))
            out[at] = _predict(model, x[at])
            _restore(layers, trained)
    finally:
        _restore(layers, trained)
    return out


def adapted_statistics(
    mean: np.ndarray,
    var: np.ndarray,
    reference: dict[str, list[float]],
    here_mean: np.ndarray,
    here_var: np.ndarray,
    weight: float,
    eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A layer's statistics for a record: its inputs moved ``weight`` of the way from the record's mean and
    variance to the reference's, then normalised as trained (``eps``: the layer's own)."""
    ref_mean, ref_var = np.asarray(reference["mean"]), np.asarray(reference["variance"])
    ratio = ((here_var + eps) / (ref_var + eps)) ** weight  # the record's spread against the training rows'
    centre = ref_mean + weight * (here_mean - ref_mean)
    return centre + (mean - ref_mean) * np.sqrt(ratio), (var + eps) * ratio - eps


def _restore(layers: list[Any], trained: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Put the trained statistics back."""
    for layer, (mean, var) in zip(layers, trained):
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    """The model's outputs for ``x``, in passes of :data:`BATCH` rows."""
    listed = isinstance(model.input, (list, tuple))  # the rows in the structure the model was built with, or Keras warns
    parts = (x[i : i + BATCH] for i in range(0, len(x), BATCH))
    return np.concatenate([np.asarray(model([p] if listed else p, training=False)) for p in parts])
