"""Which examples of the current epoch one input pipeline has handed to training: a bitmap per epoch.

The tf.data service hands out files to whichever worker asks first, so the order of an epoch is
not a function of (seed, epoch) and three numbers cannot say where a service run stands. The
ledger can: bit ``i`` of an epoch is set once the example with canonical index ``i`` (the split's
files in sorted order, each file's records in file order: ``ingest.order``) was consumed.

Size: an epoch is ``N / 8`` bytes before compression, and at worst (bits at random) that plus
about 150 bytes of header and zlib framing, so 64 KiB holds about 523,000 examples at worst. In
practice far less: files the service finished are runs of ones, files not yet begun runs of
zeros, so only files in flight cost bits (``tests/ingest/test_ledger.py``: 1,464 bytes for
1,000,000 examples 60% in with 8 files half-read; 97 bytes for 640 examples 1.5 epochs in). At
most two epochs are open: a batch may take the last examples of one epoch and the first of the next.

Runs on the host (the client of the service), in the thread that hands batches to training.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from stoker.errors import DataError

_HEADER = struct.Struct("<qqI")  # epoch, examples per epoch, bytes of the first epoch's bitmap


class Ledger:
    """Consumed examples of epoch ``epoch`` (and of the next, once a batch crosses into it)."""

    def __init__(self, num_examples: int, epoch: int = 0) -> None:
        if num_examples < 1:
            raise ValueError(f"a ledger needs at least one example per epoch, not {num_examples}")
        self.num_examples, self.epoch = num_examples, epoch
        self._bits = {epoch: np.zeros(num_examples, bool), epoch + 1: np.zeros(num_examples, bool)}

    def consumed(self, epoch: int) -> np.ndarray:
        """[N] bool: examples of ``epoch`` handed to training (all of them for a finished epoch)."""
        if epoch < self.epoch:
            return np.ones(self.num_examples, bool)
        return self._bits.get(epoch, np.zeros(self.num_examples, bool)).copy()

    def consume(self, epochs: np.ndarray, ids: np.ndarray) -> None:
        """Mark examples ``ids`` of ``epochs`` (arrays of one batch) consumed; advances past full epochs."""
        for epoch in np.unique(epochs):
            if int(epoch) not in self._bits:
                raise DataError(
                    f"the input ledger is at epoch {self.epoch} and got an example of epoch {int(epoch)}: "
                    "the service reader handed out an epoch before finishing the one before it"
                )
            bits = self._bits[int(epoch)]
            chosen = ids[epochs == epoch]
            if bits[chosen].any():
                raise DataError(
                    f"example ids {sorted(int(i) for i in chosen[bits[chosen]])[:10]} of epoch {int(epoch)} "
                    "were handed to training twice; this is a bug in ingest.service_once"
                )
            bits[chosen] = True
        while self._bits[self.epoch].all():
            del self._bits[self.epoch]
            self.epoch += 1
            self._bits[self.epoch + 1] = np.zeros(self.num_examples, bool)

    def count(self) -> int:
        """Examples of the current epoch consumed so far (the position's ``consumed``)."""
        return int(self._bits[self.epoch].sum())

    def to_bytes(self) -> bytes:
        """The checkpointed form: a header, then each open epoch's bitmap packed and compressed."""
        first = zlib.compress(np.packbits(self._bits[self.epoch]).tobytes(), 6)
        second = zlib.compress(np.packbits(self._bits[self.epoch + 1]).tobytes(), 6)
        return _HEADER.pack(self.epoch, self.num_examples, len(first)) + first + second

    @classmethod
    def from_bytes(cls, data: bytes, num_examples: int) -> Ledger:
        """A ledger saved by :meth:`to_bytes`; the split must still hold ``num_examples`` examples."""
        try:
            epoch, n, size = _HEADER.unpack_from(data)
            body = data[_HEADER.size :]
            first = np.unpackbits(np.frombuffer(zlib.decompress(body[:size]), np.uint8))[:n].astype(bool)
            second = np.unpackbits(np.frombuffer(zlib.decompress(body[size:]), np.uint8))[:n].astype(bool)
        except (struct.error, zlib.error) as err:
            raise DataError(f"the checkpoint's input ledger ({len(data)} bytes) cannot be read: {err}") from None
        if n != num_examples:
            raise DataError(
                f"the checkpoint's input ledger counts {n} examples per epoch, the split now holds {num_examples}: "
                "resume with the same data, or start a new RUN="
            )
        ledger = cls(n, epoch)
        ledger._bits = {epoch: first, epoch + 1: second}
        return ledger
