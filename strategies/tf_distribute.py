"""tf.distribute backends: one_device, mirrored, multi_worker and tpu.

Batches reach replicas through ``experimental_distribute_values_from_function`` from a plain
``iter(dataset)`` on each worker: distributed iterators cannot be checkpointed in TF 2.16,
plain ones can, and that is what makes mid-epoch resume exact.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from stoker.errors import DataError, StokerError
from strategies import devices
from strategies.backend import BACKENDS, Backend, StrategyOptions
from strategies.topology import Topology

log = logging.getLogger(__name__)


def _part(t: tf.Tensor, parts: int, index: int) -> tf.Tensor:
    n = tf.shape(t)[0]
    return t[index * n // parts : (index + 1) * n // parts]


class TFDistribute(Backend):
    """A backend over a ``tf.distribute.Strategy``."""

    strategy: tf.distribute.Strategy

    def scope(self):
        return self.strategy.scope()

    def distribute(self, batch: Any) -> Any:
        t = self.topology
        if t.local_replicas == 1 and t.workers == 1:
            return batch

        def value_fn(ctx: tf.distribute.experimental.ValueContext) -> Any:
            i = ctx.replica_id_in_sync_group - t.first_local_replica
            return tf.nest.map_structure(lambda x: _part(x, t.local_replicas, i), batch)

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def run(self, fn: Callable[..., Any], args: tuple = ()) -> Any:
        return self.strategy.run(fn, args=args)

    def reduce_sum(self, value: Any) -> tf.Tensor:
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)

    def gather_ints(self, values: np.ndarray) -> np.ndarray:
        """Host, collective over the workers (one row per worker, from its first local replica)."""
        t = self.topology
        if t.workers == 1:
            return super().gather_ints(values)
        row = tf.constant(np.asarray(values, np.int64)[None])
        per_replica = self.strategy.experimental_distribute_values_from_function(lambda _ctx: row)
        return self.strategy.gather(per_replica, axis=0).numpy()[:: t.local_replicas]


@BACKENDS.register("one_device")
class OneDevice(TFDistribute):
    """``OneDeviceStrategy`` on the first device."""

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        names = devices.configure(1 if options.name == "one_device" else options.devices)
        self.strategy = tf.distribute.OneDeviceStrategy(names[0])


@BACKENDS.register("mirrored")
class Mirrored(TFDistribute):
    """``MirroredStrategy`` over DEVICES devices of this process (logical CPUs here)."""

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        names = devices.configure(options.devices)
        cross = None if names[0].startswith("/gpu") else tf.distribute.ReductionToOneDevice()
        self.strategy = tf.distribute.MirroredStrategy(names, cross_device_ops=cross)
        n = self.strategy.num_replicas_in_sync
        self.topology = Topology(workers=1, worker_index=0, replicas=n, local_replicas=n)


@BACKENDS.register("multi_worker")
class MultiWorker(TFDistribute):
    """``MultiWorkerMirroredStrategy`` over the workers in ``TF_CONFIG``, DEVICES each."""

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        if "TF_CONFIG" not in os.environ:
            raise RuntimeError(
                "STRATEGY=multi_worker needs TF_CONFIG on every host (see README, Multi-host); "
                "`make train STRATEGY=multi_worker NP=2` launches local workers with it set"
            )
        tf_config = json.loads(os.environ["TF_CONFIG"])
        task = tf_config.get("task", {})
        workers = len(tf_config.get("cluster", {}).get("worker", []))
        log.info("multi_worker: worker %s of %d (addresses not logged)", task.get("index"), workers)
        devices.configure(options.devices)
        comm = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=options.collective_timeout_s,
        )
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
        n = self.strategy.num_replicas_in_sync
        resolver = self.strategy.cluster_resolver
        self.topology = Topology(
            workers=workers, worker_index=int(resolver.task_id), replicas=n, local_replicas=n // workers
        )

    @property
    def is_chief(self) -> bool:
        return self.topology.worker_index == 0


@BACKENDS.register("tpu")
class TPU(TFDistribute):
    """``TPUStrategy`` through ``TPUClusterResolver``; fails within seconds when no TPU answers."""

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        self.strategy = connect_tpu(options.tpu, options.tpu_timeout_s)
        n = self.strategy.num_replicas_in_sync
        self.topology = Topology(workers=1, worker_index=0, replicas=n, local_replicas=n)

    def check_input(self, dataset: tf.data.Dataset) -> None:
        """Host: refuse a pipeline XLA cannot compile for TPU (see :func:`tpu_readiness`)."""
        problems = tpu_readiness(dataset)
        if problems:
            raise DataError("the input pipeline is not ready for TPU: " + "; ".join(problems))


# Dataset ops that run Python and so cannot run on a TPU host's input pipeline without this process.
PYTHON_OPS = ("PyFunc", "EagerPyFunc", "PyFuncStateless", "GeneratorDataset")


def tpu_readiness(dataset: tf.data.Dataset) -> list[str]:
    """Host, any machine: why ``dataset`` would not feed a TPU (empty when it would).

    Checks that every component has a fully static shape (batch dimension included, which
    needs ``drop_remainder=True``) and that no stage calls back into Python
    (``py_function``, ``numpy_function``, ``from_generator``).
    """
    problems = []
    for path, spec in _flat_specs(dataset.element_spec):
        if not spec.shape.is_fully_defined():
            hint = " (batch with drop_remainder=True)" if spec.shape.rank and spec.shape[0] is None else ""
            problems.append(f"{path} has shape {spec.shape}, not static{hint}")
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())  # noqa: SLF001 (the only public route)
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    found = sorted(ops.intersection(PYTHON_OPS))
    if found:
        problems.append(
            f"the pipeline calls Python ({', '.join(found)}): replace py_function/numpy_function/"
            f"from_generator stages with TensorFlow ops"
        )
    return problems


def _flat_specs(spec: Any) -> list[tuple[str, tf.TensorSpec]]:
    from tensorflow.python.util import nest  # the joined-path flatten is not exported as tf.nest

    return [(p or "element", s) for p, s in nest.flatten_with_joined_string_paths(spec)]


class NoTPUError(StokerError, RuntimeError):
    """No TPU is reachable at the address given."""


def connect_tpu(tpu: str, timeout_s: float) -> tf.distribute.Strategy:
    """A TPUStrategy for ``tpu``; raises :class:`NoTPUError` quickly when there is none.

    ``num_accelerators()`` answers at once (``{'TPU': 0}`` locally and for an unreachable
    address) while ``connect_to_cluster`` on an unreachable address hangs for minutes, so
    the count is asked first, in a thread bounded by ``timeout_s``.
    """
    import concurrent.futures

    def count() -> int:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        return int(resolver.num_accelerators().get("TPU", 0)), resolver

    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        n, resolver = pool.submit(count).result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise NoTPUError(f"TPU {tpu!r} did not answer within {timeout_s:.0f} s; check TPU= and the network") from None
    except (ValueError, tf.errors.OpError) as err:
        raise NoTPUError(f"no TPU found for TPU={tpu!r}: {err}. Use STRATEGY=mirrored or one_device here") from None
    finally:
        pool.shutdown(wait=False)
    if n == 0:
        raise NoTPUError(
            f"no TPU found for TPU={tpu!r} (the cluster resolver counts 0 TPU cores). This machine has none: "
            f"use STRATEGY=mirrored or one_device, or give TPU=<name or grpc://address> of a reachable TPU"
        )
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def backend(options: StrategyOptions) -> Backend:
    """The backend named by ``options.name`` (imports Horovod and pipeline parallelism lazily)."""
    if options.name == "horovod" and options.elastic:
        from strategies.horovod_elastic import ElasticHorovod

        return ElasticHorovod(options)
    if options.name == "horovod":
        import strategies.horovod  # noqa: F401  (registers itself)
    if options.name == "pipeline":
        import strategies.pipeline_parallel  # noqa: F401
    return BACKENDS.get(options.name)(options)
