"""Augmentations of training beats inside the tf.data pipeline (never of validation or test beats).

Amplitude scaling and Gaussian noise work on any input shape. Time shift, time stretch and
baseline wander act on the time axis of 1D beats ``(batch, samples, 1)``; they keep the
Kaggle/Kachuee row format: samples moved past either end are dropped, new ones are zeros,
and the wander is added to the beat only, not to its zero padding. Mixup blends pairs of
beats and their one-hot labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import tensorflow as tf


@dataclass(frozen=True)
class Augment:
    """How to augment a batch; every field at 0 means no augmentation."""

    #: Multiply each beat by a factor drawn from U(1 - scale, 1 + scale).
    scale: float = 0.0
    #: Add Gaussian noise of this standard deviation.
    noise: float = 0.0
    #: Move each beat by up to this many samples, left or right.
    shift: int = 0
    #: Resample each beat's time axis by a factor drawn from U(1 - stretch, 1 + stretch).
    stretch: float = 0.0
    #: Add a slow sinusoid (at most half a cycle per beat) of amplitude up to this.
    wander: float = 0.0
    #: Mixup: blend beats and labels with a weight drawn from Beta(mixup, mixup).
    mixup: float = 0.0
    #: The last this many values of each row are rhythm features: only mixup touches them.
    rhythm: int = 0
    #: Signals one after the other in each row (leads, reference beats): moved and scaled together.
    channels: int = 1

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name not in ("rhythm", "channels"))


def _support(x: tf.Tensor) -> tf.Tensor:
    """1.0 up to each beat's last non-zero sample, 0.0 in its zero padding; shape of ``x``."""
    nonzero = tf.cast(tf.not_equal(x, 0), x.dtype)
    return tf.cast(tf.cumsum(nonzero, axis=1, reverse=True) > 0, x.dtype)


def _warp(x: tf.Tensor, shift: int, stretch: float) -> tf.Tensor:
    """Move and resample beats ``(batch, samples, channels)`` by linear interpolation, zeros outside."""
    n, length = tf.shape(x)[0], tf.shape(x)[1]
    t = tf.cast(tf.range(length), x.dtype)[None, :]
    offset = tf.cast(tf.random.uniform([n, 1], -shift, shift + 1, dtype=tf.int32), x.dtype) if shift else 0.0
    rate = tf.random.uniform([n, 1], 1 - stretch, 1 + stretch, dtype=x.dtype) if stretch else 1.0
    pos = (t - offset) / rate
    i0 = tf.floor(pos)
    frac = (pos - i0)[..., None]
    last = tf.cast(length - 1, x.dtype)
    inside = tf.cast((pos >= 0) & (pos <= last), x.dtype)[..., None]
    lo = tf.cast(tf.clip_by_value(i0, 0, last), tf.int32)
    hi = tf.minimum(lo + 1, length - 1)
    a = tf.gather(x, lo, batch_dims=1)
    b = tf.gather(x, hi, batch_dims=1)
    return ((1 - frac) * a + frac * b) * inside


def _wander(x: tf.Tensor, amplitude: float) -> tf.Tensor:
    """Add a random slow sinusoid (at most half a cycle over the row) to each beat's support."""
    n, length = tf.shape(x)[0], tf.shape(x)[1]
    t = tf.cast(tf.range(length), x.dtype)[None, :] / tf.cast(length, x.dtype)
    cycles = tf.random.uniform([n, 1], 0.0, 0.5, dtype=x.dtype)
    phase = tf.random.uniform([n, 1], 0.0, 2 * math.pi, dtype=x.dtype)
    size = tf.random.uniform([n, 1], -amplitude, amplitude, dtype=x.dtype)
    drift = (size * tf.sin(2 * math.pi * cycles * t + phase))[..., None]
    return x + drift * _support(x)


def _beta(n: tf.Tensor, alpha: float, dtype: tf.DType) -> tf.Tensor:
    """``n`` draws from Beta(alpha, alpha) as a ratio of two gamma draws."""
    a = tf.random.gamma([n], alpha, dtype=dtype)
    b = tf.random.gamma([n], alpha, dtype=dtype)
    return a / (a + b)


def augment_batch(x: tf.Tensor, y: tf.Tensor, spec: Augment) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment one training batch ``x`` with labels ``y`` (one-hot when ``spec.mixup``)."""
    rank = len(x.shape)
    if spec.rhythm:  # beat samples are augmented, rhythm values are left as they are
        beat, rhythm = x[:, : -spec.rhythm], x[:, -spec.rhythm :]
        x = tf.concat([_augment_samples(beat, spec, rank), rhythm], axis=1)
    else:
        x = _augment_samples(x, spec, rank)
    if spec.mixup:
        n = tf.shape(x)[0]
        lam = _beta(n, spec.mixup, x.dtype)
        lam = tf.maximum(lam, 1 - lam)  # the first beat keeps the larger share (and its class weight)
        other = tf.random.shuffle(tf.range(n))
        lx = tf.reshape(lam, tf.concat([[n], tf.ones([rank - 1], tf.int32)], 0))
        x = lx * x + (1 - lx) * tf.gather(x, other)
        ly = tf.cast(lam[:, None], y.dtype)
        y = ly * y + (1 - ly) * tf.gather(y, other)
    return x, y


def _augment_samples(x: tf.Tensor, spec: Augment, rank: int) -> tf.Tensor:
    """Shift, stretch, wander, scale and noise on beat samples; several channels are moved and scaled together."""
    if spec.channels > 1 and rank == 3:
        n, total = tf.shape(x)[0], tf.shape(x)[1]
        side_by_side = tf.transpose(tf.reshape(x, [n, spec.channels, total // spec.channels]), [0, 2, 1])
        one = Augment(**{**{f.name: getattr(spec, f.name) for f in fields(spec)}, "channels": 1})
        return tf.reshape(tf.transpose(_augment_samples(side_by_side, one, rank), [0, 2, 1]), [n, total, 1])
    if spec.shift or spec.stretch:
        x = _warp(x, spec.shift, spec.stretch)
    if spec.wander:
        x = _wander(x, spec.wander)
    if spec.scale:
        shape = tf.concat([tf.shape(x)[:1], tf.ones([rank - 1], tf.int32)], 0)
        x = x * tf.random.uniform(shape, 1 - spec.scale, 1 + spec.scale, dtype=x.dtype)
    if spec.noise:
        x = x + tf.random.normal(tf.shape(x), stddev=spec.noise, dtype=x.dtype)
    return x
