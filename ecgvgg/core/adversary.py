"""Subject-invariant training: a record-identity head behind a gradient-reversal layer (Ganin &
Lempitsky 2015; for heartbeats Zhang et al. 2021), used in training only.

The head reads the network's penultimate features (``fc2``) and learns to tell which training record
a beat comes from; the reversal layer passes its gradient back to the network negated, so the
convolution blocks and the dense layers learn features that serve the classes and *not* the record:
what is left to the classifier is what carries over to a patient it has never seen. The saved,
served and exported model is the network alone.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

#: The layer whose output the record head reads.
FEATURE_LAYER = "fc2"


@tf.custom_gradient
def reverse_gradient(x: tf.Tensor) -> tuple[tf.Tensor, Any]:
    """Identity forwards, the gradient negated backwards."""
    return tf.identity(x), lambda dy: -dy


class SubjectInvariant(keras.Model):
    """``net`` trained beside a record head that it must defeat; ``fit`` takes ``((beats, record codes), labels)``,
    predicts with ``net`` alone (a code below 0, e.g. a synthetic beat, adds nothing to the record loss)."""

    def __init__(self, net: keras.Model, records: int, weight: float, units: int = 64, **kwargs: Any):
        super().__init__(**kwargs)
        self.net, self.weight = net, float(weight)
        features = net.get_layer(FEATURE_LAYER).output
        self.features = keras.Model(net.inputs, [net.output, features], name="net_and_features")
        self.head = keras.Sequential(
            [keras.layers.Dense(units, activation="relu", dtype="float32"), keras.layers.Dense(records, dtype="float32")],
            name="record_head",
        )
        self.head.build((None, int(features.shape[-1])))
        self.record_loss = keras.metrics.Mean(name="record_loss")

    def call(self, inputs: Any, training: bool = False) -> Any:
        """The network's class probabilities (the record head is not part of a prediction)."""
        return self.net(inputs, training=training)

    def train_step(self, data: Any) -> dict[str, Any]:
        """One step on the class loss plus ``weight`` x the record loss, whose gradient reaches ``net`` reversed."""
        (beats, records), y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            probs, features = self.features(beats, training=True)
            loss = self.compute_loss(x=beats, y=y, y_pred=probs, sample_weight=sample_weight, training=True)
            logits = self.head(reverse_gradient(tf.cast(features, tf.float32)), training=True)
            known = tf.cast(records >= 0, tf.float32)
            per_row = keras.losses.sparse_categorical_crossentropy(tf.maximum(records, 0), logits, from_logits=True)
            record_loss = tf.math.divide_no_nan(tf.reduce_sum(per_row * known), tf.reduce_sum(known))
            total = self.optimizer.scale_loss(loss + self.weight * record_loss)  # mixed precision scales the loss
        grads = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.record_loss.update_state(record_loss)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        return {**self.compute_metrics(beats, y, probs, sample_weight), "record_loss": self.record_loss.result()}


def served(model: keras.Model) -> keras.Model:
    """The model to save and predict with: the network inside a :class:`SubjectInvariant`, else ``model``."""
    return model.net if isinstance(model, SubjectInvariant) else model
