"""``build(dataset, split, options, input_context)``: the one entry point to an input pipeline.

A thin facade: it validates the request, picks the engine (``pipeline.engine``: ``tfdata``, the
stage list of ``ingest.tfdata``; or ``dali``, ``ingest.dali``; ``PIPELINE=dali`` selects the
latter), then puts the tf.data service (``DATA_SERVICE=``) and the host prefetch around what the
engine built. Runs on the host at build time.
"""

from __future__ import annotations

import dataclasses
import time

import tensorflow as tf

from ingest import positioned, service_once, stages, tfdata
from ingest.built import Built, Position, Request
from ingest.dataset import Dataset
from ingest.options import PipelineOptions
from ingest.order import Order
from stoker.errors import DataError

__all__ = ["Built", "Order", "Position", "Request", "build", "training_order"]


def build(
    dataset: Dataset,
    split: str,
    options: PipelineOptions,
    input_context: tf.distribute.InputContext | None = None,
    *,
    batch_size: int,
    training: bool,
    seed: int = 0,
    shuffle_buffer: int = 0,
    repeat: bool = True,
    position: Position | None = None,
    order: Order | None = None,
) -> Built:
    """Build one input pipeline (one worker or host).

    Args:
        dataset: the registered dataset.
        split: which split to read.
        options: the pipeline section of the run config.
        input_context: the strategy's input context (pipelines and this one's index), or None.
        batch_size: the *global* batch size; each input pipeline gets an equal part.
        training: shuffle, repeat and augment when True; evaluation reads each example once.
        seed: seeds file order, shuffle and augmentation.
        shuffle_buffer: examples in the shuffle buffer (training only).
        repeat: repeat forever (training) or stop after one pass.
        position: train from this input position, addressed by position (:func:`training_order`
            says whether the dataset and options allow it); None builds the stage list as before.
        order: the training order of ``position`` when the caller has it (else worked out here).
    """
    started = time.perf_counter()
    request = _request(split, input_context, batch_size, training, seed, shuffle_buffer, repeat)
    if position is not None:
        reason = positioned.unsupported(dataset, options)
        if reason or not training:
            raise DataError(f"an input position needs a tf.data training pipeline; not with {reason or 'evaluation'}")
        if order is None:
            order = positioned.order_for(dataset, split, options, seed=seed, shuffle_buffer=shuffle_buffer)
        request = dataclasses.replace(request, position=position, order=order)
    if options.data_service and options.engine != "dali" and not service_once.unsupported(dataset, split, options):
        # Exactly once: no host prefetch after it (its ledger counts batches as they are handed over).
        order = request.order or service_once.order_of(dataset, split)
        built = service_once.build(dataset, request, options, order)
        return dataclasses.replace(built, build_s=time.perf_counter() - started)
    if options.engine == "dali":
        if options.data_service:
            raise DataError(
                "PIPELINE=dali cannot run on DATA_SERVICE workers (they do not load DALI's ops); "
                "use one of the two: drop DATA_SERVICE= or use PIPELINE=optimized"
            )
        from ingest import dali  # Only DALI runs load it (and DALI).

        built = dali.build(dataset, request, options)
    else:
        built = tfdata.build(dataset, request, options)
    ds = built.dataset
    if options.data_service:
        from ingest import service  # Only runs that use the service load it.

        ds = service.distribute(ds, options, job_name=f"{dataset.name}-{split}")
    ds = stages.prefetch(ds, options=options)
    return dataclasses.replace(built, dataset=ds, build_s=time.perf_counter() - started)


def training_order(
    dataset: Dataset, split: str, options: PipelineOptions, *, seed: int, shuffle_buffer: int
) -> tuple[Order | None, str]:
    """(the training order, '') when ``split`` can be addressed by input position, else (None, why not)."""
    reason = positioned.unsupported(dataset, options)
    if reason:
        if positioned.quota_reason(dataset):
            raise DataError(
                f"{positioned.quota_reason(dataset)} resamples by input position, which {reason} does not "
                "keep; drop one of the two"
            )
        return None, reason
    return positioned.order_for(dataset, split, options, seed=seed, shuffle_buffer=shuffle_buffer), ""


def _request(
    split: str,
    input_context: tf.distribute.InputContext | None,
    batch_size: int,
    training: bool,
    seed: int,
    shuffle_buffer: int,
    repeat: bool,
) -> Request:
    if batch_size < 1:
        raise DataError(f"batch size {batch_size} must be >= 1; set BATCH= (train.batch_size) to a positive number")
    pipelines = input_context.num_input_pipelines if input_context else 1
    if batch_size % pipelines:
        raise DataError(
            f"batch size {batch_size} does not split evenly over {pipelines} input pipelines; "
            f"use a multiple of {pipelines}"
        )
    return Request(
        split=split,
        batch_size=batch_size // pipelines,
        training=training,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        repeat=repeat,
        pipelines=pipelines,
        index=input_context.input_pipeline_id if input_context else 0,
    )
