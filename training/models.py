"""The model registry: built-ins here, others through the ``stoker.models`` entry point group.

A model factory takes ``(input_shape, num_classes)`` and returns any ``tf_keras`` model
(Sequential, functional or subclassed) that gives logits (cast to float32 by the trainer).
Only ``STRATEGY=pipeline`` needs a ``tf_keras.Sequential``: it splits the model by layers.

``MODEL=keras:<Application>`` builds one of ``tf_keras.applications`` (``ResNet50``,
``MobileNetV2``, ``EfficientNetB0``, ...) from scratch (``weights=None``) for the dataset's
input shape and classes, or from a local weights file (``SET=train.weights=/path.h5``).
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from stoker.config import ConfigError
from stoker.registry import Registry, RegistryError

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


KERAS_PREFIX = "keras:"


def applications() -> list[str]:
    """The names ``MODEL=keras:<name>`` takes: every model class of ``tf_keras.applications``."""
    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def application(name: str, input_shape: tuple[int, ...], num_classes: int, weights: str = "") -> keras.Model:
    """``tf_keras.applications.<name>`` with the dataset's input shape and classes, giving logits.

    Built with its own classifier head (``classes=num_classes``, no softmax) and without the
    rescaling some applications put in front (``include_preprocessing=False``; EfficientNetB*'s,
    which has no switch, is undone by a Rescaling(255) before it): every
    application takes the dataset's float inputs as they come (for images, standardized per
    channel). ``weights`` is a local file: a full model's weights, or a ``*notop*`` file of the
    convolutional base, which then gets a new head (average pooling and a dense layer).
    """
    if name not in applications():
        close = difflib.get_close_matches(name, applications(), n=3, cutoff=0.4)
        raise RegistryError(
            f"unknown MODEL=keras:{name}: "
            + (f"did you mean {', '.join('keras:' + c for c in close)}? " if close else "")
            + f"tf_keras.applications has {', '.join(applications())}"
        )
    if weights and not os.path.isfile(weights):
        raise ConfigError(
            f"train.weights={weights!r} is not a file: give a local .h5 or .weights.h5 file, or leave it ''"
        )
    factory = getattr(keras.applications, name)
    notop = bool(weights) and "notop" in os.path.basename(weights)
    kwargs = dict(include_top=not notop, weights=weights or None, input_shape=tuple(input_shape))
    kwargs.update(dict(pooling="avg") if notop else dict(classes=num_classes, classifier_activation=None))
    if "include_preprocessing" in inspect.signature(factory).parameters:
        kwargs["include_preprocessing"] = False
    elif name.startswith("EfficientNetB"):  # its Rescaling(1/255) has no switch: undo it in front
        inputs = keras.Input(tuple(input_shape))
        kwargs["input_tensor"] = keras.layers.Rescaling(255.0, name="undo_rescaling")(inputs)
    try:
        model = factory(**kwargs)
    except ValueError as err:
        raise ConfigError(
            f"MODEL=keras:{name} cannot take inputs of shape {tuple(input_shape)} ({err}); for images set "
            f"data.image_size (most applications need >= 32 px; NASNet and Inception more)"
        ) from None
    head = _logits(num_classes)(model.output) if notop else model.output
    # float32 logits under mixed precision, as the built-in models' last layer gives.
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(head)
    return keras.Model(model.inputs, logits, name=f"keras_{name}")


def build(name: str, input_shape: tuple[int, ...], num_classes: int, weights: str = "") -> keras.Model:
    """The model ``name`` (registered, or ``keras:<Application>``) for inputs of ``input_shape``.

    Its variables exist on return (a subclassed model is called once on zeros), so an optimizer
    can be built on them; ``weights`` (a local file) is loaded into it."""
    if name.startswith(KERAS_PREFIX):
        return application(name[len(KERAS_PREFIX) :], tuple(input_shape), num_classes, weights)
    try:
        factory = MODELS.get(name)
    except RegistryError as err:
        raise RegistryError(
            f"{err}; or MODEL=keras:<Application> (tf_keras.applications, e.g. keras:MobileNetV2)"
        ) from None
    model = factory(tuple(input_shape), num_classes)
    if not model.built:
        model(tf.zeros([1, *input_shape], tf.float32), training=False)
    if weights:
        if not os.path.isfile(weights):
            raise ConfigError(f"train.weights={weights!r} is not a file: give a local weights file, or leave it ''")
        model.load_weights(weights)
    return model
