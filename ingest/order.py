"""The training order as a function of (seed, epoch): which example stands at each position.

Positions are global. Position ``g`` counts examples over epochs: epoch ``g // N``, place
``g % N`` in it (``N`` examples per epoch). Global batch ``s`` holds positions
``[s*B, (s+1)*B)``, and input pipeline ``i`` of ``P`` takes the slots ``[i*b, (i+1)*b)`` of every
global batch (``b = B / P``). So the sequence of global batches depends on the seed alone; the
topology only says how each batch is split (:class:`Slots`). An input position is therefore
three numbers, :class:`ingest.built.Position`, not a copy of any buffer.

Examples are numbered canonically: the split's files in sorted order, each file's records in
file order. :class:`Order` maps (epoch, place) to a canonical index:

- ``none``: canonical order.
- ``window``: the epoch's files in a permutation keyed by (seed, epoch), taken ``C`` at a time
  (``pipeline.order_cycle``, 64 or every file) and read round-robin within each group of ``C`` (as a
  deterministic interleave of those files reads them); that stream cut into windows of ``W``
  records, each window permuted by a bijection keyed by (seed, epoch, window). A reader that
  streams the files that way holds one window of serialized records; resuming skips the
  records of one group of files before the window, never the epoch so far.
- ``global``: one permutation of all ``N`` indices keyed by (seed, epoch).

With a :class:`ingest.resample.Quota` (class balance, weighted mixing) an epoch is not the
split once over: it is each group's draw for the epoch (``M`` examples in all, the quota's
total), in one permutation keyed by (seed, epoch). ``num_examples`` is then ``M`` and
``num_records`` stays ``N``.

The bijections are ``RandomIndexShuffle`` (``tf.random.experimental.index_shuffle``'s kernel,
called directly because TF 2.16's wrapper mis-pads batched seeds). Everything here is tf ops on
int64 tensors, run inside tf.data functions.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
import tensorflow as tf

from ingest.resample import Quota

Mode = Literal["none", "window", "global"]
_FILES_KEY = -1  # third seed word of the file permutation (windows use their index >= 0)
_GLOBAL_KEY = -2  # third seed word of the global permutation


def _shuffle(index: tf.Tensor, key: tf.Tensor, max_index: tf.Tensor) -> tf.Tensor:
    """Position of ``index`` in the permutation of [0, max_index] keyed by ``key`` ([3] or [n, 3])."""
    return tf.raw_ops.RandomIndexShuffle(index=index, seed=key, max_index=max_index)


@dataclasses.dataclass(frozen=True)
class Order:
    """The epoch order of a split: ``counts`` are records per file in sorted file order."""

    counts: tuple[int, ...]
    seed: int
    mode: Mode
    window: int = 0  # records per window (mode "window")
    cycle: int = 1  # files read round-robin together (mode "window")
    files: tuple[str, ...] = ()  # the files ``counts`` counts, sorted (none for data made in memory)
    quota: Quota | None = None  # each epoch resampled by group (balance, mixing); global mode only

    def __post_init__(self) -> None:
        if self.mode not in ("none", "window", "global"):
            raise ValueError(f"order mode {self.mode!r} is not one of none, window, global")
        if self.mode == "window" and (self.window < 1 or self.cycle < 1):
            raise ValueError("a window order needs window >= 1 (data.shuffle_buffer) and cycle >= 1")
        if self.num_records < 1:
            raise ValueError("an order needs at least one example")
        if self.quota is not None and self.mode != "global":
            raise ValueError("a resampled order draws each epoch as one permutation: mode global")
        if self.quota is not None and sum(len(m) for m in self.quota.members) > self.num_records:
            raise ValueError("the quota's groups hold more examples than the split")

    @property
    def num_records(self) -> int:
        """Examples in the split (canonical indices ``[0, num_records)``)."""
        return int(sum(self.counts))

    @property
    def num_examples(self) -> int:
        """Examples per epoch: the split once over, or the quota's draws."""
        return self.quota.total if self.quota is not None else self.num_records

    @property
    def starts(self) -> np.ndarray:
        """Canonical index of each file's first record."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def identity(self) -> dict[str, object]:
        """What a resumed run must share with the run that saved the position."""
        ident: dict[str, object] = {
            "num_examples": self.num_records,
            "files": len(self.counts),
            "seed": self.seed,
            "shuffle": self.mode,
            "window": self.window if self.mode == "window" else 0,
            "cycle": self.cycle if self.mode == "window" else 0,
        }
        if self.quota is not None:
            ident.update(self.quota.identity())
        return ident

    # ---- in tf.data functions -------------------------------------------------------------
    def file_permutation(self, epoch: tf.Tensor) -> tf.Tensor:
        """[files] int64: the file read in each slot of ``epoch``'s stream (window mode)."""
        n = len(self.counts)
        slots = tf.range(n, dtype=tf.int64)
        if self.mode != "window" or n == 1:
            return slots
        key = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(epoch, tf.int64), tf.constant(_FILES_KEY, tf.int64)])
        return _shuffle(slots, key, tf.constant(n - 1, tf.int64))

    def slot_counts(self, perm: tf.Tensor) -> tf.Tensor:
        """[groups, cycle] int64: records of the file in each slot of each group (0 pads the last)."""
        counts = tf.gather(tf.constant(self.counts, tf.int64), perm)
        groups = -(-len(self.counts) // self.cycle)
        padded = tf.concat([counts, tf.zeros([groups * self.cycle - len(self.counts)], tf.int64)], 0)
        return tf.reshape(padded, [groups, self.cycle])

    def stream_table(self, epoch: tf.Tensor) -> tf.Tensor:
        """[N] int64: the canonical index at each position of ``epoch``'s stream (before windows)."""
        perm = self.file_permutation(epoch)
        counts = tf.gather(tf.constant(self.counts, tf.int64), perm)
        n = self.num_examples
        slot = tf.repeat(tf.range(len(self.counts), dtype=tf.int64), counts)
        record = tf.range(n, dtype=tf.int64) - tf.repeat(tf.cumsum(counts, exclusive=True), counts)
        top = max(self.counts)
        key = (slot // self.cycle) * (top * self.cycle) + record * self.cycle + slot % self.cycle
        canonical = tf.gather(tf.constant(self.starts), tf.gather(perm, slot)) + record
        return tf.gather(canonical, tf.argsort(key, stable=True))

    def in_window(self, place: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
        """Stream position (in the epoch's file sequence) of the example output at ``place`` [n]."""
        w = tf.constant(self.window, tf.int64)
        n = tf.constant(self.num_examples, tf.int64)
        window = place // w
        base = window * w
        size = tf.minimum(w, n - base)
        key = tf.stack(
            [tf.fill(tf.shape(place), tf.constant(self.seed, tf.int64)), tf.fill(tf.shape(place), epoch), window],
            axis=1,
        )
        return base + _shuffle(place - base, key, size - 1)

    def mapper(self, epoch: tf.Tensor):
        """``place [n] -> canonical index [n]`` for ``epoch`` (scalar); call once per epoch."""
        epoch = tf.cast(epoch, tf.int64)
        if self.mode == "none":
            return lambda place: place
        if self.mode == "global":
            key = tf.stack([tf.constant(self.seed, tf.int64), epoch, tf.constant(_GLOBAL_KEY, tf.int64)])
            top = tf.constant(self.num_examples - 1, tf.int64)
            if self.quota is not None:
                draws = self.quota.epoch_draws(self.seed, epoch)  # [M], once per epoch
                return lambda place: tf.gather(draws, _shuffle(place, key, top))
            return lambda place: _shuffle(place, key, top)
        table = self.stream_table(epoch)
        return lambda place: tf.gather(table, self.in_window(place, epoch))

    # ---- on the host (tests, checks) ------------------------------------------------------
    def epoch_indices(self, epoch: int) -> np.ndarray:
        """The whole of ``epoch``'s canonical indices, in order (host, for tests and figures)."""
        place = tf.range(self.num_examples, dtype=tf.int64)
        return self.mapper(tf.constant(epoch, tf.int64))(place).numpy()


@dataclasses.dataclass(frozen=True)
class Slots:
    """Which global positions input pipeline ``index`` of ``pipelines`` reads, from ``start`` on."""

    global_batch: int
    pipelines: int = 1
    index: int = 0
    start: int = 0  # global position of the first example still to read

    @property
    def local(self) -> int:
        return self.global_batch // self.pipelines

    def position(self, j: tf.Tensor) -> tf.Tensor:
        """Global position of this pipeline's ``j``-th example (int64 tensor of any shape)."""
        b, big = self.local, self.global_batch
        return self.start + (j // b) * big + self.index * b + j % b

    def count_below(self, relative: int) -> int:
        """This pipeline's examples at positions in ``[start, start + relative)`` (host ints)."""
        return int(self._count(tf.constant(relative, tf.int64)))

    def owns(self, g: tf.Tensor) -> tf.Tensor:
        """Whether global position ``g`` (at or after ``start``) is one of this pipeline's slots."""
        relative = g - self.start
        lane = relative % self.global_batch
        b = self.local
        return tf.logical_and(relative >= 0, tf.logical_and(lane >= self.index * b, lane < (self.index + 1) * b))

    def range_in_epoch(self, epoch: tf.Tensor, num_examples: int) -> tuple[tf.Tensor, tf.Tensor]:
        """[lo, hi) of ``j`` whose positions fall in ``epoch`` (tf int64 scalars, for flat_map)."""
        n = tf.constant(num_examples, tf.int64)
        epoch = tf.cast(epoch, tf.int64)
        return self._count(epoch * n - self.start), self._count((epoch + 1) * n - self.start)

    def _count(self, relative: tf.Tensor) -> tf.Tensor:
        relative = tf.maximum(relative, 0)
        b, big = tf.constant(self.local, tf.int64), tf.constant(self.global_batch, tf.int64)
        index = tf.constant(self.index, tf.int64)
        return (relative // big) * b + tf.clip_by_value(relative % big - index * b, 0, b)
