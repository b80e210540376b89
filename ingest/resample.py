"""Resampled epochs: class balance and weighted mixing as a quota per group, drawn by position.

A :class:`Quota` splits the canonical examples of a split into groups (the classes of the label
for ``data.balance`` and ``data.class_weights``; the sources of a mixed dataset ``DATASET=a+b``
for ``data.weights``) and says how many examples each epoch draws from each group. Group ``k``'s
draw in epoch ``e`` is ``take[k]`` members in a permutation keyed by (seed, e, k), repeated when
``take[k]`` exceeds the group (oversampling) and cut short when it is smaller (undersampling, a
new subset each epoch). The epoch's draws are then permuted together (the order's global
permutation), so every decision is a function of (seed, epoch, position): no random state, and a
resume on any topology reproduces the stream. Each epoch holds exactly ``take[k]`` examples of
group ``k`` (the quotas are apportioned by largest remainder), which is tighter than the
binomial spread of drawing each example's group at random, as ``rejection_resample`` does.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from stoker.errors import DataError

_QUOTA_KEY = -3  # third seed word of group k's draw is _QUOTA_KEY - k (windows >= 0, files -1, global -2)


@dataclasses.dataclass(frozen=True, eq=False)
class Quota:
    """Each epoch draws ``take[k]`` examples from group ``k`` (canonical indices ``members[k]``)."""

    kind: str  # "balance" or "mix"
    names: tuple[str, ...]  # of the groups (class names, source datasets)
    members: tuple[np.ndarray, ...]
    take: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.members) == len(self.take)):
            raise ValueError("a quota needs one name, member list and take per group")
        for name, members, take in zip(self.names, self.members, self.take, strict=True):
            if take and not len(members):
                raise DataError(f"{self.kind}: group {name!r} has no examples to draw {take} from")
        if self.total < 1:
            raise ValueError("a quota must draw at least one example per epoch")

    @property
    def total(self) -> int:
        """Examples per resampled epoch."""
        return int(sum(self.take))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(m) for m in self.members)

    def identity(self) -> dict[str, object]:
        return {"resample": self.kind, "groups": list(self.names), "sizes": list(self.sizes), "take": list(self.take)}

    def epoch_draws(self, seed: int, epoch: tf.Tensor) -> tf.Tensor:
        """[total] int64 canonical indices: every group's draw for ``epoch``, group after group (tf)."""
        epoch = tf.cast(epoch, tf.int64)
        parts = []
        for k, (members, take) in enumerate(zip(self.members, self.take, strict=True)):
            if not take:
                continue
            n = len(members)
            key = tf.stack([tf.constant(seed, tf.int64), epoch, tf.constant(_QUOTA_KEY - k, tf.int64)])
            ranks = tf.range(take, dtype=tf.int64) % n
            picked = tf.raw_ops.RandomIndexShuffle(index=ranks, seed=key, max_index=tf.constant(n - 1, tf.int64))
            parts.append(tf.gather(tf.constant(members, tf.int64), picked))
        return tf.concat(parts, 0)


def apportion(total: int, weights: list[float] | tuple[float, ...]) -> tuple[int, ...]:
    """``total`` split in proportion to ``weights`` in whole numbers (largest remainder; sums to ``total``)."""
    w = np.asarray(weights, np.float64)
    exact = total * w / w.sum()
    whole = np.floor(exact).astype(np.int64)
    short = total - int(whole.sum())
    order = np.argsort(-(exact - whole), kind="stable")
    whole[order[:short]] += 1
    return tuple(int(x) for x in whole)


def balance(labels: np.ndarray, targets: tuple[float, ...], names: tuple[str, ...]) -> Quota:
    """Groups by label; an epoch of as many examples as the split, apportioned by ``targets``.

    ``targets`` has one weight per class (``data.balance=uniform``: all equal). A class with a
    positive target and no example is an error naming it; a class whose target is 0 is left out.
    """
    if len(targets) != len(names):
        raise DataError(
            f"data.class_weights has {len(targets)} values but the dataset has {len(names)} classes "
            f"({', '.join(names)}); give one weight per class"
        )
    labels = np.asarray(labels, np.int64)
    bad = labels[(labels < 0) | (labels >= len(names))]
    if len(bad):
        raise DataError(f"label {int(bad[0])} is outside the dataset's {len(names)} classes; check the label feature")
    members = tuple(np.flatnonzero(labels == c).astype(np.int64) for c in range(len(names)))
    empty = [names[c] for c in range(len(names)) if targets[c] > 0 and not len(members[c])]
    if empty:
        raise DataError(
            f"data.balance: class {', '.join(empty)} has no training example to draw; "
            "give it weight 0 in data.class_weights or add examples of it"
        )
    return Quota("balance", names, members, apportion(len(labels), targets))


def mix(sizes: tuple[int, ...], weights: tuple[float, ...], names: tuple[str, ...]) -> Quota:
    """Groups by source (``sizes`` consecutive canonical indices each); shares by ``weights``.

    The epoch ends when the source of the largest weight has been read once (the largest such
    source on a tie): every other source draws ``weight / largest weight`` times that many,
    repeating a small source and subsampling a large one.
    """
    if len(weights) != len(sizes):
        raise DataError(f"data.weights has {len(weights)} values for {len(sizes)} datasets ({'+'.join(names)})")
    lead = max(range(len(sizes)), key=lambda k: (weights[k], sizes[k]))
    per = sizes[lead] / weights[lead]
    take = tuple(int(round(per * w)) for w in weights)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    members = tuple(np.arange(s, s + n, dtype=np.int64) for s, n in zip(starts, sizes, strict=True))
    return Quota("mix", names, members, take)


def class_weights(labels: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """``train.loss_weights=balanced``: N / (classes * n_c) per class (0 for a class with no example)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)[:num_classes]
    present = int((counts > 0).sum())
    return tuple(float(len(labels) / (present * c)) if c else 0.0 for c in counts)
