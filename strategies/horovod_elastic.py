"""Elastic Horovod: ranks may die or join a live run; training goes on from the last commit.

Runs in every rank under ``horovodrun --min-np --max-np --host-discovery-script`` (see
``strategies.launch`` and ``strategies.discovery``). Horovod keeps the model in step across a
membership change but not the data; here the commit also holds the input position (examples
taken by all ranks), and each re-entry rebuilds this rank's read plan from it and the new
``hvd.size()``/``hvd.rank()``, so each example of the epoch is trained on once.

The elastic cycle (``hvd.elastic.run``), every line of it in this module:

- every ``strategy.commit_every`` steps each rank saves model, optimizer, step and position in
  host memory (:class:`ElasticState`), then learns whether hosts were added or removed;
- a rank's death shows up in the survivors as a failed collective: they restore the last commit,
  re-initialise Horovod over the ranks left and re-enter the loop; a slot added shows up at the
  next commit (``HostsUpdatedInterrupt``), after which the new rank joins;
- on each entry rank 0's state is broadcast (joining ranks take it) and the loop rebuilds its
  pipeline, compiled steps, checkpoint folder and id file for the new topology.

Horovod's ``TensorFlowState`` is not used: under TF2 eager its ``sync()`` broadcasts no variables
(only its constructor does, a collective that deadlocks a rank joining a live run; tried with
Horovod 0.28.1), so a joining rank would start from its own initial weights.
"""

from __future__ import annotations

import logging
from typing import Any

from horovod.common.elastic import ObjectState

from strategies.backend import StrategyOptions
from strategies.horovod import Horovod
from strategies.topology import Topology

log = logging.getLogger(__name__)


class ElasticState(ObjectState):
    """Host memory copy of ``variables`` (model, optimizer, step) plus plain values (``examples``).

    ``save`` copies the variables to host, ``restore`` assigns the copy back, ``sync`` broadcasts
    rank 0's variables and values to every rank (a collective, run at each entry of the loop).
    """

    def __init__(self, hvd: Any, variables: list, **values: Any) -> None:
        self.hvd, self.variables = hvd, variables
        self._values = [v.numpy() for v in variables]
        super().__init__(bcast_object=hvd.broadcast_object, get_rank=hvd.rank, **values)

    def save(self) -> None:
        self._values = [v.numpy() for v in self.variables]
        super().save()

    def restore(self) -> None:
        for var, value in zip(self.variables, self._values, strict=True):
            var.assign(value)
        super().restore()

    def sync(self) -> None:
        self.hvd.broadcast_variables(self.variables, root_rank=0)
        self._values = [v.numpy() for v in self.variables]
        super().sync()


class ElasticHorovod(Horovod):
    """Horovod data parallel whose ranks may change while it trains (``ELASTIC=1``)."""

    elastic = True

    def __init__(self, options: StrategyOptions) -> None:
        super().__init__(options)
        self.state: ElasticState | None = None
        self.entries = 0  # times the loop was entered (1 + membership changes survived)

    def _refresh(self) -> None:
        size, rank = self.hvd.size(), self.hvd.rank()
        self.topology = Topology(workers=size, worker_index=rank, replicas=size, local_replicas=1)

    def after_first_step(self, model, optimizer) -> None:
        """Nothing: each entry of the loop already broadcast rank 0's variables (``ElasticState.sync``)."""

    def run_loop(self, loop: Any) -> Any:
        """Host, every rank: ``loop.train()`` under ``hvd.elastic.run``, re-entered after each change."""
        self.state = ElasticState(self.hvd, loop.variables(), examples=loop.examples)
        self.state.register_reset_callbacks([self._on_reset])

        @self.hvd.elastic.run
        def body(state: ElasticState) -> Any:
            self._refresh()
            self.entries += 1
            loop.examples = state.examples
            loop.restart()
            log.info(
                "horovod elastic: rank %d of %d from step %d (%d examples taken)",
                self.topology.worker_index,
                self.topology.workers,
                int(loop.step),
                loop.examples,
            )
            result = loop.train()
            if self.topology.workers > 1:
                self.gather_ints([0])  # barrier: ranks leave together
            return result

        return body(self.state)

    def _on_reset(self) -> None:
        log.warning("horovod elastic: ranks changed; going on with %d rank(s) from the last commit", self.hvd.size())

    def at_boundary(self, step: int, loop: Any) -> None:
        """Host, every rank: every ``commit_every`` steps and at the last, commit (model, optimizer,
        step, position to host memory; this rank's held example ids to its file), then raise
        ``HostsUpdatedInterrupt`` on every rank alike when slots were added or removed."""
        if step % self.options.commit_every and step != loop.total:
            return
        self.state.examples = loop.examples
        self.state.save()
        loop.committed()
        self.state.check_host_updates()
