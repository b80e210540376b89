"""One run assembly for training and profiling: dataset, pipeline, model, optimizer, trainer.

``make train`` (``training.controller``) and ``make profile`` (``profiles.harness``) build a run
with :func:`assemble`, so what the profiler measures is what training runs (the same batch
check, input check, pipeline and model). Host, once per process, before the loop.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import tensorflow as tf
import tf_keras as keras

from ingest import autotune, datasets, pipeline, positioned, resample, validation
from ingest.dataset import Dataset
from ingest.runconfig import RunConfig
from stoker.errors import StokerError
from strategies.backend import Backend
from training import models
from training.trainer import Trainer

log = logging.getLogger("stoker")


@dataclasses.dataclass(frozen=True)
class Assembled:
    """What a run is made of, built in the backend's scope."""

    dataset: Dataset
    built: pipeline.Built | None  # None when assembled with_pipeline=False (built after a restore)
    model: keras.Model
    optimizer: Any
    trainer: Trainer
    config: RunConfig  # the run's config, PIPELINE=auto's choices applied (the one to build with)
    auto: autotune.Choice | None = None  # what PIPELINE=auto chose and why (None for other presets)


def assemble(config: RunConfig, backend: Backend, *, with_pipeline: bool = True) -> Assembled:
    """Dataset (prepared by the chief when missing), precision and seeds, this worker's training
    pipeline (its batch checked against the topology and the backend), model, optimizer, trainer.

    ``with_pipeline=False`` leaves the pipeline to :func:`train_pipeline`, called once the
    checkpoint's input position is known (the controller restores first, then builds)."""
    dataset = datasets.get(config.data)
    if backend.is_chief:
        ensure_prepared(dataset, config)
    context = backend.input_context()
    config, auto = tuned(config, dataset, pipelines=context.num_input_pipelines if context else 1)
    setup_precision_and_seeds(config, config.strategy.name)
    topo = backend.topology
    topo.local_batch(config.train.batch_size)  # checks divisibility with a clear message
    built = None
    if with_pipeline:
        built = train_pipeline(config, dataset, backend)
        backend.check_input(built.dataset)
    model, optimizer = build_model(config, dataset, backend, topo.replicas)
    weights = loss_weights(config, dataset)
    trainer = Trainer(backend, model, optimizer, global_batch=config.train.batch_size, class_weights=weights)
    return Assembled(dataset, built, model, optimizer, trainer, config, auto)


def tuned(config: RunConfig, dataset: Dataset, *, pipelines: int = 1) -> tuple[RunConfig, autotune.Choice | None]:
    """Host: ``config`` with PIPELINE=auto's choices for one of ``pipelines`` training pipelines
    (measured here, or reused from an earlier run's saved choice); unchanged for other presets."""
    if config.pipeline.preset != "auto":
        return config, None
    t, n = config.train, dataset.count_examples(config.data.train_split)
    run_examples = t.steps * t.batch_size if t.steps else t.epochs * n
    target = autotune.Target(
        dataset=dataset,
        split=config.data.train_split,
        batch_size=t.batch_size // pipelines,
        seed=config.data.seed,
        shuffle_buffer=config.data.shuffle_buffer,
        run_examples=run_examples // pipelines,
        data_dir=config.data.data_dir,
    )
    options, choice = autotune.resolve(config.pipeline, target)
    return dataclasses.replace(config, pipeline=options), choice


def loss_weights(config: RunConfig, dataset: Dataset) -> tuple[float, ...]:
    """Host: ``train.loss_weights=balanced``'s weight per class, from the train split's labels (else ())."""
    if config.train.loss_weights == "none":
        return ()
    if positioned.quota_reason(dataset):
        log.warning(
            "train.loss_weights=balanced with %s: the loss weights count the split's classes, not the "
            "resampled stream's, so minority classes are favoured twice",
            positioned.quota_reason(dataset),
        )
    weights = resample.class_weights(dataset.labels(config.data.train_split), dataset.num_classes)
    log.info(
        "train.loss_weights=balanced: %s",
        ", ".join(f"{n} {w:.3g}" for n, w in zip(dataset.label_names, weights, strict=True)),
    )
    return weights


def setup_precision_and_seeds(config: RunConfig, backend_name: str) -> None:
    """Host, once, before any variable exists."""
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.train.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU")) and backend_name != "tpu"
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")


def ensure_prepared(dataset: Dataset, config: RunConfig) -> None:
    """Host (chief), before step 1: prepare the dataset when its files are missing or stale (and config
    allows it), then check the files that changed since they were validated (``data.validate``)."""
    _prepare_if_needed(dataset, config)
    validation.before_training(dataset, config.data.validate)


def _prepare_if_needed(dataset: Dataset, config: RunConfig) -> None:
    stale = dataset.stale() if dataset.is_prepared() else ""
    if stale and config.train.prepare_missing:
        log.info("%s: preparing %s again", stale, dataset.root)
        validation.prepare(dataset)
        return
    if dataset.is_prepared():
        differs = dataset.mismatch()  # reads dataset_info.json
        if differs:
            log.warning(
                "%s holds %s: training on what is there; run `make prepare DATASET=%s` with the same "
                "settings to regenerate it",
                dataset.root,
                differs,
                dataset.name,
            )
        return
    if not config.train.prepare_missing:
        dataset.files(config.data.train_split)  # raises the clear "run make prepare" error
        return
    log.info("dataset %s is not prepared under %s: preparing it now", dataset.name, dataset.root)
    validation.prepare(dataset)


def prepare(config: RunConfig) -> dict[str, str]:
    """Host, before workers are launched: prepare the dataset once, so no worker reads half-written
    files, and make PIPELINE=auto's choice once; returns the environment that hands it to them."""
    dataset = datasets.get(config.data)
    not_positioned = positioned.unsupported(dataset, config.pipeline)
    if config.strategy.elastic and not_positioned:
        raise StokerError(
            f"ELASTIC=1 needs an input addressed by position (ranks re-derive their reads from it after a "
            f"change), which {not_positioned} is not: drop it, or drop ELASTIC=1"
        )
    ensure_prepared(dataset, config)
    return autotune.handoff(tuned(config, dataset, pipelines=config.strategy.processes)[1])


def build_model(config: RunConfig, dataset: Dataset, backend: Backend, lr_replicas: int) -> tuple[keras.Model, Any]:
    """Model and optimizer in the backend's scope; the optimizer is built before any restore."""
    name = config.train.model or dataset.default_model or models.DEFAULT_FOR.get(dataset.name, "shapes_cnn")
    spec = dataset.element_spec[dataset.feature_key]
    lr = config.train.learning_rate * (lr_replicas if config.train.lr_scaling == "linear" else 1)
    with backend.scope():
        model = models.build(name, tuple(spec.shape), dataset.num_classes, config.train.weights)
        backend.check_model(model)
        opt = keras.optimizers.Adam(lr) if config.train.optimizer == "adam" else keras.optimizers.SGD(lr, momentum=0.9)
        if keras.mixed_precision.global_policy().name == "mixed_float16":
            opt = keras.mixed_precision.LossScaleOptimizer(opt)
        opt.build(model.trainable_variables)
    return model, opt


def training_order(config: RunConfig, dataset: Dataset) -> tuple[pipeline.Order | None, str]:
    """The run's training order when its input can be addressed by position, else (None, why not)."""
    return pipeline.training_order(
        dataset,
        config.data.train_split,
        config.pipeline,
        seed=config.data.seed,
        shuffle_buffer=config.data.shuffle_buffer,
    )


def train_pipeline(
    config: RunConfig,
    dataset: Dataset,
    backend: Backend,
    position: pipeline.Position | None = None,
    order: pipeline.Order | None = None,
) -> pipeline.Built:
    """Host: this worker's training input pipeline, as the run config describes it.

    From ``position`` (the start when None) in ``order`` (:func:`training_order`'s, worked out
    here when not given) when the input can be addressed by position; otherwise the stage list
    whose iterator state a checkpoint keeps."""
    if order is None:
        order, _ = training_order(config, dataset)
    if order is not None and position is None:
        position = pipeline.Position(seed=config.data.seed)
    return pipeline.build(
        dataset,
        config.data.train_split,
        config.pipeline,
        backend.input_context(),
        batch_size=config.train.batch_size,
        training=True,
        seed=config.data.seed,
        shuffle_buffer=config.data.shuffle_buffer,
        position=position if order is not None else None,
        order=order,
    )
