"""The model registry: built-ins here, others through the ``stoker.models`` entry point group.

A model factory takes ``(input_shape, num_classes)`` and returns a ``tf_keras.Sequential``
whose last layer gives float32 logits; pipeline parallelism splits it by layers.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from stoker.registry import Registry

ModelFn = Callable[[tuple[int, ...], int], keras.Model]
MODELS: Registry[ModelFn] = Registry("model", group="stoker.models")
DEFAULT_FOR = {"shapes": "shapes_cnn", "clicks": "clicks_mlp", "synthetic": "shapes_cnn"}


def _logits(num_classes: int) -> keras.layers.Layer:
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")  # float32 under mixed precision


@MODELS.register("shapes_cnn")
def shapes_cnn(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Four conv blocks, max pooling and a dense head on the flattened map (~130k parameters at 64 px).

    Flattening keeps where features are, which telling a cross from a square needs; global
    average pooling here sat at chance for epochs before it learned. No batch norm: its
    per-replica statistics would make backends differ and REMAT update them twice.
    """
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape),
            keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            _logits(num_classes),
        ],
        name="shapes_cnn",
    )


@MODELS.register("clicks_mlp")
def clicks_mlp(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Two hidden layers of 64 for tabular features."""
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            _logits(num_classes),
        ],
        name="clicks_mlp",
    )


class _Residual(keras.layers.Layer):
    """conv-bn-relu-conv-bn plus the input (projected when the shape changes)."""

    def __init__(self, filters: int, stride: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters, self.stride = filters, stride
        self.a = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)
        self.bn_a = keras.layers.BatchNormalization()
        self.b = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
        self.bn_b = keras.layers.BatchNormalization()
        self.proj = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False) if stride > 1 else None

    @tf.autograph.experimental.do_not_convert  # plain Python control flow: converting it only costs seconds
    def call(self, x, training=False):
        h = keras.activations.relu(self.bn_a(self.a(x), training=training))
        h = self.bn_b(self.b(h), training=training)
        return keras.activations.relu(h + (self.proj(x) if self.proj is not None else x))

    def get_config(self):
        return dict(super().get_config(), filters=self.filters, stride=self.stride)


@MODELS.register("resnet_small")
def resnet_small(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """A ResNet with 3 stages of one residual block each (16, 32, 64 filters)."""
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape),
            keras.layers.Conv2D(16, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            _Residual(16, 1),
            _Residual(32, 2),
            _Residual(64, 2),
            keras.layers.GlobalAveragePooling2D(),
            _logits(num_classes),
        ],
        name="resnet_small",
    )


def build(name: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The registered model ``name`` for inputs of ``input_shape``."""
    return MODELS.get(name)(tuple(input_shape), num_classes)
