"""GPipe-style pipeline parallelism: a Sequential model split into STAGES consecutive stages.

One process, one replica. Each step splits the batch into MICROBATCHES micro-batches, runs
every forward (stage k of micro-batch m on device k), then every backward, accumulates the
gradients and makes one update (the trainer's). Inside the compiled step ops run as soon as
their inputs are ready, so stage k works on micro-batch m+1 while stage k+1 works on m.

Each stage gets its own tape, and its backward runs under the stage's device with
``tape.gradient(h_out, [h_in] + stage_vars, output_gradients=dh)``: a single tape inside
``tf.function`` would place every gradient op on the first device. ``REMAT=1`` wraps each
stage in ``tf.recompute_grad`` so its activations are recomputed in the backward pass.

Variables are created where the model is built (the first device); on CPU every logical
device shares memory, and on GPUs TensorFlow copies a stage's weights to its device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import tensorflow as tf
import tf_keras as keras

from stoker import timing
from strategies import devices
from strategies.backend import BACKENDS, Backend, StrategyOptions
from strategies.topology import split_bounds

log = logging.getLogger(__name__)


def split_layers(layers: list[Any], stages: int) -> list[list[Any]]:
    """``layers`` in ``stages`` consecutive, near-equal groups (every group non-empty)."""
    if stages > len(layers):
        raise ValueError(f"STAGES={stages} but the model has only {len(layers)} layers; lower STAGES")
    return [layers[slice(*split_bounds(len(layers), stages, k))] for k in range(stages)]


def bubble_fraction(stages: int, microbatches: int) -> float:
    """Idle share of the GPipe schedule: (K-1) / (M+K-1)."""
    return (stages - 1) / (microbatches + stages - 1)


class Stage:
    """Consecutive layers on one device; callable on activations (replica)."""

    def __init__(self, layers: list[Any], device: str, remat: bool) -> None:
        self.layers, self.device = layers, device
        self.fn = tf.recompute_grad(self._forward) if remat else self._forward

    def _forward(self, h: tf.Tensor) -> tf.Tensor:
        for layer in self.layers:
            h = layer(h, training=True)
        return h

    @property
    def variables(self) -> list[tf.Variable]:
        return [v for layer in self.layers for v in layer.trainable_variables]

    def __call__(self, h: tf.Tensor) -> tf.Tensor:
        return self.fn(h)


@BACKENDS.register("pipeline")
class Pipeline(Backend):
    """GPipe over ``STAGES`` devices of this process with ``MICROBATCHES`` micro-batches."""

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        self.devices = devices.configure(options.devices)[: options.stages]
        self._stages: list[Stage] | None = None
        self._model = None
        self._input_spec: tf.TensorSpec | None = None

    def loss_divisor(self, global_batch: int) -> int:
        if global_batch % self.options.microbatches:
            raise ValueError(
                f"batch {global_batch} does not split into MICROBATCHES={self.options.microbatches}; "
                f"use a batch that is a multiple of it (BATCH=)"
            )
        return global_batch

    def check_model(self, model) -> None:
        """Host: only a ``tf_keras.Sequential`` has the one chain of layers the stages are cut from."""
        if not isinstance(model, keras.Sequential):
            kind = (
                "functional" if getattr(model, "_is_graph_network", False) else f"subclassed ({type(model).__name__})"
            )
            raise ValueError(
                f"STRATEGY=pipeline needs a tf_keras.Sequential model (it splits the layers into STAGES "
                f"consecutive stages); {model.name!r} is a {kind} model (MODEL=keras:<Application> models are "
                f"functional): use another STRATEGY (one_device, mirrored, multi_worker, horovod) or register "
                f"the model as a Sequential"
            )

    def stages(self, model) -> list[Stage]:
        """The model's stages (made once per model, host)."""
        if self._model is not model:
            self.check_model(model)
            groups = split_layers(list(model.layers), self.options.stages)
            self._stages = [Stage(g, d, self.options.remat) for g, d in zip(groups, self.devices, strict=True)]
            self._model = model
            log.info(
                "pipeline: %d stages of %s layers, %d micro-batches, remat=%s",
                len(groups),
                "/".join(str(len(g)) for g in groups),
                self.options.microbatches,
                self.options.remat,
            )
        return self._stages

    def loss_and_grads(self, model, loss_fn: Callable[[Any, tf.Tensor], tf.Tensor], batch: Any):
        """Replica: GPipe forward of every micro-batch, then every backward; gradients summed."""
        x, y = batch
        stages = self.stages(model)
        self._input_spec = tf.TensorSpec([x.shape[0] // self.options.microbatches, *x.shape[1:]], x.dtype)
        xs = tf.split(x, self.options.microbatches)
        ys = tf.split(y, self.options.microbatches)
        forwards = [self._forward(stages, xm, ym, loss_fn) for xm, ym in zip(xs, ys, strict=True)]  # all forwards
        grads = [[tf.zeros_like(v) for v in s.variables] for s in stages]
        for tapes, inputs, outputs, loss in forwards:  # then all backwards
            self._backward(stages, tapes, inputs, outputs, loss, grads)
        flat = {id(v): g for s, gs in zip(stages, grads, strict=True) for v, g in zip(s.variables, gs, strict=True)}
        logits = tf.concat([outputs[-1] for _, _, outputs, _ in forwards], axis=0)
        loss = tf.add_n([loss for *_, loss in forwards])
        return loss, logits, [flat[id(v)] for v in model.trainable_variables]

    def _forward(self, stages: list[Stage], x: tf.Tensor, y: tf.Tensor, loss_fn):
        """Replica: one micro-batch through every stage, each under its device and its own tape."""
        tapes, inputs, outputs = [], [], []
        h = x
        for k, stage in enumerate(stages):
            with tf.device(stage.device), tf.GradientTape() as tape:
                if k:
                    tape.watch(h)
                inputs.append(h)
                h = stage(h)
                if k == len(stages) - 1:
                    loss = loss_fn(y, h)
            tapes.append(tape)
            outputs.append(h)
        return tapes, inputs, outputs, loss

    def _backward(
        self, stages: list[Stage], tapes, inputs, outputs, loss: tf.Tensor, grads: list[list[tf.Tensor]]
    ) -> None:
        """Replica: one micro-batch's backward, last stage first, each on its own device."""
        target, dh = loss, None
        for k in reversed(range(len(stages))):
            stage = stages[k]
            with tf.device(stage.device):
                sources = ([inputs[k]] if k else []) + stage.variables
                got = tapes[k].gradient(target, sources, output_gradients=dh)
                if k:
                    dh, got = got[0], got[1:]
                    target = outputs[k - 1]
                grads[k] = [a if b is None else a + b for a, b in zip(grads[k], got, strict=True)]

    def extra_metrics(self) -> dict[str, Any]:
        """The schedule's bubble fraction and each stage's measured forward+backward time."""
        k, m = self.options.stages, self.options.microbatches
        out: dict[str, Any] = {
            "pipeline": {
                "stages": k,
                "microbatches": m,
                "remat": self.options.remat,
                "bubble_fraction": bubble_fraction(k, m),
            }
        }
        if self._stages and self._input_spec is not None:
            out["pipeline"]["stage_time_ms"] = self.measure_stages()
        return out

    def measure_stages(self, repeats: int = 5) -> list[float]:
        """Host: median forward+backward time of each stage on one micro-batch, in ms."""
        times, h = [], tf.random.uniform(self._input_spec.shape, dtype=tf.float32)
        h = tf.cast(h, self._input_spec.dtype)
        for stage in self._stages:
            step = tf.function(lambda a, s=stage: _stage_step(s, a))
            out = step(h)  # compile
            calls = timing.time_calls(
                lambda step=step, h=h: float(tf.reduce_sum(tf.cast(step(h), tf.float32))),
                calls=1,
                reps=repeats,
                warmup=0,
            )
            times.append(round(1000 / calls.median, 3))  # the median call, in ms
            h = out
        return times


def _stage_step(stage: Stage, h: tf.Tensor) -> tf.Tensor:
    """Replica: a stage's forward and backward on ``h``; returns the forward output."""
    with tf.device(stage.device), tf.GradientTape() as tape:
        tape.watch(h)
        out = stage(h)
    grads = tape.gradient(out, [h] + stage.variables, output_gradients=tf.ones_like(out))
    with tf.control_dependencies([g for g in grads if g is not None]):
        return tf.identity(out)
