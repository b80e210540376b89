"""The tf.data service's input ledger: which examples of an epoch training took (no processes)."""

from __future__ import annotations

import numpy as np
import pytest

from ingest.ledger import Ledger
from stoker.errors import DataError


def test_a_batch_across_the_epoch_boundary_and_a_round_trip():
    ledger = Ledger(10)
    ledger.consume(np.zeros(6, np.int64), np.array([9, 0, 3, 4, 5, 6]))
    assert (ledger.epoch, ledger.count()) == (0, 6)
    # The last 4 of epoch 0 and 2 of epoch 1 in one batch: epoch 0 closes, epoch 1 holds 2.
    ledger.consume(np.array([0, 0, 0, 0, 1, 1]), np.array([1, 2, 7, 8, 5, 0]))
    assert (ledger.epoch, ledger.count()) == (1, 2)
    again = Ledger.from_bytes(ledger.to_bytes(), 10)
    assert (again.epoch, again.count()) == (1, 2)
    assert np.flatnonzero(again.consumed(1)).tolist() == [0, 5]
    assert again.consumed(0).all() and not again.consumed(2).any()


def test_an_example_twice_or_an_epoch_ahead_is_refused():
    ledger = Ledger(10)
    ledger.consume(np.zeros(2, np.int64), np.array([1, 2]))
    with pytest.raises(DataError, match=r"\[2\] of epoch 0 were handed to training twice"):
        ledger.consume(np.zeros(1, np.int64), np.array([2]))
    with pytest.raises(DataError, match="at epoch 0 and got an example of epoch 2"):
        ledger.consume(np.array([2]), np.array([3]))


def test_a_ledger_of_other_data_is_refused():
    saved = Ledger(10).to_bytes()
    with pytest.raises(DataError, match="counts 10 examples per epoch, the split now holds 12"):
        Ledger.from_bytes(saved, 12)
    with pytest.raises(DataError, match="cannot be read"):
        Ledger.from_bytes(saved[:-3], 10)


def test_size_stays_small_mid_epoch_and_bounded_at_worst():
    # 1,000,000 examples in 1,000 files of 1,000: 600 files consumed, 8 in flight half-read at
    # random, the rest untouched (what a service epoch looks like mid-way).
    n, per = 1_000_000, 1_000
    ledger = Ledger(n)
    done = np.arange(600 * per)
    rng = np.random.default_rng(0)
    flight = np.concatenate([f * per + rng.choice(per, per // 2, replace=False) for f in range(600, 608)])
    ids = np.concatenate([done, flight])
    ledger.consume(np.zeros(len(ids), np.int64), ids)
    size = len(ledger.to_bytes())
    print(f"ledger of {n:,} examples, 60.4% consumed: {size} bytes")
    assert size < 2 * 1024
    # Worst case: every other example consumed at random, 524,288 examples: N/8 bytes, a header and
    # zlib's framing (the next epoch's empty bitmap included).
    worst = Ledger(524_288)
    chosen = rng.choice(524_288, 262_144, replace=False)
    worst.consume(np.zeros(len(chosen), np.int64), chosen)
    assert len(worst.to_bytes()) <= 524_288 // 8 + 256
