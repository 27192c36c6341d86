"""VGG16-style networks for beats: the same layout, layer names and knobs in 1D and 2D.

The layout is Keras' ``VGG16``: five blocks of 2, 2, 3, 3, 3 convolutions (64, 128, 256, 512,
512 filters times ``width``; 3-wide kernels, same padding, ReLU), a max-pool after each block,
then ``fc1``, ``fc2`` and the ``predictions`` softmax. Unlike Keras' image model, the pools use
``padding="same"``, so a dimension rounds up (187 -> 94 -> 47 -> 24 -> 12 -> 6) and never reaches
zero: five pools work on short beats and on small folded images (14 x 14 -> 1 x 1). For inputs
whose sizes are multiples of 32 the result equals Keras' valid pooling. Batch normalisation
(optional, after each convolution) uses momentum 0.9 so that its moving statistics settle within
the few hundred steps that a small heartbeat set gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def vgg16(
    input_shape: Sequence[int] = (187, 1),
    classes: int = 5,
    *,
    width: float = 1.0,
    dense_units: int = 4096,
    dropout: float = 0.0,
    batch_norm: bool = False,
    include_top: bool = True,
    pooling: str | None = None,
    weights: str | Path | None = None,
    classifier_activation: str = "softmax",
    rhythm: int = 0,
    rhythm_mean: Sequence[float] | None = None,
    rhythm_variance: Sequence[float] | None = None,
    channels: int = 1,
    references: int = 0,
) -> keras.Model:
    """VGG16 for beats ``(length, channels)`` (``Conv1D``, named ``vgg16_1d``) or beat images
    ``(h, w, channels)`` (``Conv2D``, ``vgg16_2d``), as Keras' ``applications.VGG16`` takes its knobs.

    With ``rhythm=R`` (1D only) the last R values of each row (shape ``(length + R, 1)``) are
    rhythm features: standardised with ``rhythm_mean`` / ``rhythm_variance``, passed through a
    small dense layer ``rhythm_fc`` and joined to the flattened convolution features before ``fc1``.

    With ``channels=C`` (1D only) each row holds C signals one after the other (the leads' beats,
    then ``references`` reference beats, the last ones, one per leading beat channel); the network
    reads them as C channels of one beat and adds each beat minus its reference as a further channel
    (layers ``channels``, ``beat_minus_reference``), so rows keep the shape ``(C * length [+ R], 1)``.
    """
    input_shape = tuple(input_shape)
    dims = len(input_shape) - 1
    _check_knobs(input_shape, width, pooling, rhythm, channels, references, include_top)
    inputs = keras.Input(shape=input_shape, name="beat")
    x, r = inputs, None
    if rhythm:
        x, r = _rhythm_branch(inputs, rhythm, rhythm_mean, rhythm_variance)
    if channels > 1:
        x = _channels(x, channels, references)
    x = _conv_blocks(x, dims, width, batch_norm)
    if include_top:
        x = _top(x, r, classes, dense_units, dropout, classifier_activation)
    elif pooling is not None:
        glob = {
            ("avg", 1): layers.GlobalAveragePooling1D,
            ("max", 1): layers.GlobalMaxPooling1D,
            ("avg", 2): layers.GlobalAveragePooling2D,
            ("max", 2): layers.GlobalMaxPooling2D,
        }
        x = glob[(pooling, dims)](name=f"global_{pooling}_pool")(x)
    model = keras.Model(inputs, x, name=f"vgg16_{dims}d")
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
        model.load_weights(path)
    return model


def _check_knobs(
    input_shape: tuple[int, ...],
    width: float,
    pooling: str | None,
    rhythm: int,
    channels: int,
    references: int,
    include_top: bool,
) -> None:
    """Refuse knobs that do not fit together, with what to change."""
    dims = len(input_shape) - 1
    if dims not in (1, 2):
        raise ValueError(f"vgg16 needs an input shape of 2 (1D beats) or 3 (images) dimensions, got {input_shape}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if rhythm and dims != 1:
        raise ValueError("the rhythm branch needs 1D input")
    if channels > 1 and dims != 1:
        raise ValueError("several channels need 1D input")
    if not 0 <= references <= channels - references:
        raise ValueError(f"{references} reference channels need as many beat channels, of {channels}")
    if rhythm and not include_top:
        raise ValueError("the rhythm branch joins the network before fc1: it needs include_top=True")


#: Units of the dense layer on the rhythm features.
RHYTHM_UNITS = 32


def _rhythm_branch(
    inputs: Any,
    rhythm: int,
    mean: Sequence[float] | None,
    variance: Sequence[float] | None,
) -> tuple[Any, Any]:
    """Split rows into beat samples and ``rhythm`` values; standardise the values and pass them through ``rhythm_fc``."""
    length = inputs.shape[1]
    if length <= rhythm:
        raise ValueError(f"{rhythm} rhythm values leave no beat samples in rows of {length}")
    x = layers.Cropping1D((0, rhythm), name="beat_samples")(inputs)
    r = layers.Flatten(name="rhythm")(layers.Cropping1D((length - rhythm, 0), name="rhythm_values")(inputs))
    m = np.zeros(rhythm) if mean is None else np.asarray(mean, dtype=np.float64)
    v = np.ones(rhythm) if variance is None else np.asarray(variance, dtype=np.float64)
    # (r - mean) / sd as a Rescaling with constant per-feature factors: Normalization's captured tensors do
    # not survive the ONNX conversion
    sd = np.sqrt(np.maximum(v, 1e-12))
    r = layers.Rescaling(scale=(1 / sd).tolist(), offset=(-m / sd).tolist(), name="rhythm_norm")(r)
    return x, layers.Dense(RHYTHM_UNITS, activation="relu", name="rhythm_fc")(r)


def _channels(x: Any, channels: int, references: int) -> Any:
    """Rows ``(C * length, 1)`` as ``(length, C + references)``: the C signals side by side, then each beat
    minus its reference."""
    total = x.shape[1]
    if total % channels:
        raise ValueError(f"rows of {total} samples do not split into {channels} channels")
    x = layers.Reshape((channels, total // channels), name="channels")(x)
    if references:
        beats = layers.Cropping1D((0, channels - references), name="referenced_beats")(x)
        refs = layers.Cropping1D((channels - references, 0), name="reference_beats")(x)
        x = layers.Concatenate(axis=1, name="beats_and_differences")(
            [x, layers.Subtract(name="beat_minus_reference")([beats, refs])]
        )
    return layers.Permute((2, 1), name="samples_by_channel")(x)


def _conv_blocks(x: Any, dims: int, width: float, batch_norm: bool) -> Any:
    """The five convolution blocks, each closed by a max-pool."""
    conv = layers.Conv1D if dims == 1 else layers.Conv2D
    pool = layers.MaxPooling1D if dims == 1 else layers.MaxPooling2D
    for b, (n_conv, filters) in enumerate(BLOCKS, start=1):
        f = max(1, round(filters * width))
        for i in range(1, n_conv + 1):
            cname = f"block{b}_conv{i}"
            if batch_norm:
                x = conv(f, 3, padding="same", use_bias=False, name=cname)(x)
                # synchronized: under several workers or GPUs, batch statistics over the global batch
                x = layers.BatchNormalization(momentum=0.9, synchronized=True, name=f"{cname}_bn")(x)
                x = layers.Activation("relu", name=f"{cname}_relu")(x)
            else:
                x = conv(f, 3, padding="same", activation="relu", name=cname)(x)
        x = pool(2, padding="same", name=f"block{b}_pool")(x)
    return x


def _top(x: Any, rhythm: Any, classes: int, dense_units: int, dropout: float, activation: str) -> Any:
    """Flatten (joined with the rhythm branch), ``fc1``, ``fc2`` and the ``predictions`` layer."""
    x = layers.Flatten(name="flatten")(x)
    if rhythm is not None:
        x = layers.Concatenate(name="beat_and_rhythm")([x, rhythm])
    for fc in ("fc1", "fc2"):
        x = layers.Dense(dense_units, activation="relu", name=fc)(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    # float32 output keeps the softmax stable under mixed precision
    return layers.Dense(classes, activation=activation, dtype="float32", name="predictions")(x)


def fold_ensemble(models: Sequence[keras.Model], name: str = "fold_ensemble") -> keras.Model:
    """One Keras model that averages the softmax outputs of ``models`` (e.g. one per CV fold)."""
    if not models:
        raise ValueError("a fold ensemble needs at least one model")
    shape = tuple(models[0].input_shape[1:])
    inputs = keras.Input(shape=shape, name="beat")
    outputs = []
    for k, member in enumerate(models, start=1):
        if tuple(member.input_shape[1:]) != shape:
            raise ValueError(f"fold {k} takes inputs of shape {member.input_shape[1:]}, fold 1 {shape}")
        copy = keras.Model.from_config(member.get_config())  # weights only: no optimizer state travels along
        copy.set_weights(member.get_weights())
        copy.trainable = False
        copy.name = f"fold_{k}"
        outputs.append(copy(inputs, training=False))
    averaged = outputs[0] if len(outputs) == 1 else layers.Average(dtype="float32", name="predictions")(outputs)
    return keras.Model(inputs, averaged, name=name)


def with_new_head(model: keras.Model, classes: int) -> keras.Model:
    """``model`` with its ``predictions`` layer replaced by a new softmax over ``classes`` (the rest shared)."""
    head = model.get_layer("predictions")
    if not isinstance(head, layers.Dense):
        raise ValueError("the model has no Dense 'predictions' layer to replace (a fold ensemble?)")
    outputs = layers.Dense(classes, activation="softmax", dtype="float32", name="predictions")(head.input)
    return keras.Model(model.inputs, outputs, name=model.name)


def freeze_blocks(model: keras.Model, blocks: int) -> keras.Model:
    """Freeze the layers of convolution blocks 1..``blocks`` (``block{b}_*``) and unfreeze the rest.

    A frozen BatchNormalization layer runs in inference mode in Keras 3, with its moving
    statistics kept, as Keras' transfer-learning guide does.
    """
    for layer in model.layers:
        block = layer.name.split("_")[0]
        frozen = block.startswith("block") and block[5:].isdigit() and int(block[5:]) <= blocks
        layer.trainable = not frozen
    return model


def trainable_count(model: keras.Model) -> int:
    """Number of trainable parameters."""
    return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
