"""The outer loop: build everything from the run config, train, checkpoint, evaluate, report.

Runs on the host of every worker. Only the chief writes summaries, ``metrics.json`` and the
main checkpoint folder; every other worker saves into ``worker_<i>/`` (the collective save
needs every worker). A checkpoint holds model, optimizer, step and the input position
(``training.checkpoints.InputState``); the pipeline is built after the restore, from that
position, so running the same command again, on any worker count, continues mid-epoch with
each example of the epoch once. ``pipeline.iterator_checkpoint=true`` (and pipelines that
cannot be addressed by position) keep TensorFlow's iterator in each worker's checkpoint instead.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np
import tensorflow as tf

from ingest import integrity, pipeline
from ingest.runconfig import RunConfig, write_json_atomic
from stoker import timing
from stoker.errors import StokerError
from strategies import make_backend
from strategies.backend import Backend
from training import actions, assembly, checkpoints, evaluation
from training.step_times import StepTimes

log = logging.getLogger("stoker")


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was saved at the step boundary."""


def _window() -> dict[str, Any]:
    """A log window's sums (reset at each progress line)."""
    return {"loss": 0.0, "correct": 0.0, "n": 0, "t": timing.Laps(), "wait": 0.0, "timed": True}


def run(config: RunConfig) -> dict[str, Any]:
    """Train as ``config`` says; returns the metrics written to ``metrics.json`` (chief)."""
    backend = make_backend(config.strategy)
    try:
        return _run(config, backend)
    finally:
        backend.shutdown()


def _run(config: RunConfig, backend: Backend) -> dict[str, Any]:
    t = config.train
    run = assembly.assemble(config, backend, with_pipeline=False)
    config, dataset = run.config, run.dataset  # PIPELINE=auto's choices applied
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    objects: dict[str, Any] = {"model": run.model, "optimizer": run.optimizer, "step": step}
    order, why = assembly.training_order(config, dataset)
    # With DATA_SERVICE= an input position also says which examples of the epoch were consumed.
    ledger = bool(config.pipeline.data_service)
    state = checkpoints.InputState(order, dataset.name, ledger=ledger) if order is not None else None
    if state is None:
        if backend.elastic:
            raise StokerError(f"ELASTIC=1 needs an input addressed by position, and this run's is not ({why})")
        log.info("input state: TensorFlow's iterator (%s): a resume needs the same topology", why)
        built = assembly.train_pipeline(config, dataset, backend)
        objects["iterator"] = iterator = iter(built.dataset)
    else:
        objects.update(state.trackables())
    ckpt = tf.train.Checkpoint(**objects)
    manager = tf.train.CheckpointManager(
        ckpt, str(checkpoints.checkpoint_dir(config, backend)), max_to_keep=t.keep_checkpoints
    )
    examples = 0
    if state is None:
        checkpoints.restore(ckpt, manager, backend, t.keep_checkpoints)
    else:
        restored = checkpoints.restore_shared(ckpt, checkpoints.chief_dir(config), backend, state.check_saved)
        position = state.restored() if restored is not None else pipeline.Position(seed=config.data.seed)
        examples = position.examples(order.num_examples)
        built = assembly.train_pipeline(config, dataset, backend, position, order)
        iterator = iter(built.dataset)
    backend.check_input(built.dataset)
    # An epoch is the order's (a resampled epoch may differ from the split's size), else the split's
    # (counted once when the dataset records no size): one pass either way.
    n_train = order.num_examples if order is not None else dataset.count_examples(config.data.train_split)
    steps_per_epoch = max(1, n_train // t.batch_size)
    total = t.steps or t.epochs * steps_per_epoch
    if backend.is_chief:
        config.run_dir.mkdir(parents=True, exist_ok=True)
        written = json.loads(config.to_json()) | ({"auto": run.auto.as_dict()} if run.auto else {})
        write_json_atomic(config.run_dir / "config.json", json.dumps(written, indent=2, sort_keys=True))
    loop = _Loop(config, backend, dataset, run.trainer, iterator, built, step, manager, steps_per_epoch, total)
    loop.input_state, loop.examples, loop.ckpt, loop.built_for = state, examples, ckpt, (examples, backend.topology)
    return backend.run_loop(loop)  # an elastic backend re-enters loop.train() after membership changes


class _Loop:
    """The host loop's state: progress, timings, evaluation and reporting."""

    def __init__(self, config, backend, dataset, trainer, iterator, built, step, manager, steps_per_epoch, total):
        self.config, self.backend, self.dataset, self.trainer = config, backend, dataset, trainer
        self.iterator, self.built, self.step, self.manager = iterator, built, step, manager
        self.steps_per_epoch, self.total = steps_per_epoch, total
        self.times = StepTimes()
        self.preemption = actions.Preemption(backend)
        self.summaries = actions.Summaries(config.run_dir, backend.is_chief)
        self.ids = actions.IdRecorder(
            config.run_dir, backend.topology.worker_index, config.train.record_ids, hold=backend.elastic
        )
        self.evals: list[dict[str, Any]] = []
        self.losses: list[float] = []  # this run's per-step losses (repeatability checks)
        self.input_state: checkpoints.InputState | None = None  # None: the iterator is checkpointed
        self.examples = 0  # examples taken by all workers since the start of training (the position)
        self.saves: list[float] = []  # seconds per checkpoint save
        self.eval_s = 0.0  # seconds spent evaluating inside the loop (left out of examples_per_sec)
        self.ckpt: tf.train.Checkpoint | None = None
        self.start_step = int(step)
        self.built_for: tuple[int, Any] | None = None  # (examples, topology) the pipeline was built for
        self.first_done: timing.Laps | None = None  # examples_per_sec: wall time after the first step

    def variables(self) -> list[tf.Variable]:
        """Model, optimizer and step: what an elastic commit keeps and a joining rank receives."""
        return [*self.trainer.model.variables, *self.trainer.optimizer.variables, self.step]

    def restart(self) -> None:
        """Host, an elastic rank at each entry of the loop: this rank's pipeline from the committed
        position (``self.examples``) and the backend's topology now, compiled steps, checkpoint
        folder (only rank 0 saves), summaries and id file; uncommitted id lines are dropped."""
        topo, order = self.backend.topology, self.input_state.order
        self.ids.reopen(topo.worker_index)
        keep, chief = self.config.train.keep_checkpoints, str(checkpoints.chief_dir(self.config))
        self.manager = tf.train.CheckpointManager(self.ckpt, chief, max_to_keep=keep) if topo.is_chief else None
        if self.summaries.active != topo.is_chief:
            self.summaries = actions.Summaries(self.config.run_dir, topo.is_chief)
        if self.built_for == (self.examples, topo):  # the first entry, nothing changed since _run built it
            return
        position = pipeline.Position.at(self.examples, order.num_examples, order.seed)
        self.built = assembly.train_pipeline(self.config, self.dataset, self.backend, position, order)
        self.iterator = iter(self.built.dataset)
        self.trainer.retrace()
        self.built_for = (self.examples, topo)

    def committed(self) -> None:
        """Host: an elastic commit happened; the id lines held since the last one are final."""
        self.ids.commit()

    def save(self, s: int) -> None:
        """Host, every worker: checkpoint model, optimizer, step and the input position (timed)."""
        laps = timing.Laps()
        if self.input_state is not None:
            self.input_state.set(self.examples, self.built.ledger() if self.built.ledger else b"")
        if self.manager is None:  # an elastic rank other than 0: the chief's checkpoint holds all
            return
        self.manager.save(checkpoint_number=s)
        self.saves.append(laps.lap())

    def next_batch(self) -> dict[str, tf.Tensor]:
        try:
            return next(self.iterator)
        except integrity.READ_ERRORS as err:
            raise integrity.explain(err, self.dataset, self.built.files) from None

    def train(self) -> dict[str, Any]:
        t = self.config.train
        self.check_eval_slices()
        start_step = self.start_step
        self.window = _window()
        loss = float("nan")
        first = True
        while int(self.step) < self.total:
            if first or t.steps_per_loop == 1:
                loss = self._one_step(first)
                first = False
            else:
                loss = self._one_loop(self.loop_size(int(self.step)))
            s = int(self.step)
            if s % t.log_every == 0 or s == self.total:
                self._log(s, self.window)
                self.window = _window()
            if self.first_done is None:
                self.first_done = timing.Laps()  # kept across an elastic run's re-entries
            if t.checkpoint_every and s % t.checkpoint_every == 0:
                self.save(s)
            self.backend.at_boundary(s, self)  # elastic: commit every strategy.commit_every steps
            if s % self.steps_per_epoch == 0 and t.eval_every_epoch and s < self.total:
                eval_laps = timing.Laps()
                self._evaluate(s)
                self.eval_s += eval_laps.lap()
            if self.preemption.requested():
                self.save(s)
                self.committed()  # the checkpoint holds every step so far: held (elastic) id lines are final
                self.close_files()
                log.warning("SIGTERM: saved a checkpoint at step %d; run the same command again to resume", s)
                raise Preempted(s)
        if self.manager is not None and not (self.manager.latest_checkpoint or "").endswith(f"-{int(self.step)}"):
            self.save(int(self.step))
        wall = self.first_done.lap() - self.eval_s if self.first_done is not None else 0.0
        final_eval = self._evaluate(int(self.step), final=True)
        return self._report(loss, start_step, final_eval, wall)

    def loop_size(self, s: int) -> int:
        """Steps of the next compiled loop from step ``s``: ``train.steps_per_loop``, cut at the next
        log, checkpoint, epoch end (evaluation) or the last step, so each happens where it did."""
        t = self.config.train
        every = [t.log_every, self.steps_per_epoch] + ([t.checkpoint_every] if t.checkpoint_every else [])
        every += [self.config.strategy.commit_every] if self.backend.elastic else []
        nearest = min([e - s % e for e in every] + [self.total - s])
        return max(1, min(t.steps_per_loop, nearest))

    def _one_step(self, first: bool) -> float:
        """Host: one step, its input wait and compute timed apart."""
        fk, lk = self.dataset.feature_key, self.dataset.label_key
        laps = timing.Laps()
        batch = self.next_batch()
        wait = laps.lap()
        loss_t, correct = self.trainer.train_step((batch[fk], batch[lk]))
        loss = float(loss_t)  # waits for the step: the timing below is the step's compute
        compute = laps.lap()
        if first:
            self.backend.after_first_step(self.trainer.model, self.trainer.optimizer)
        ids = batch["id"].numpy()[None] if self.ids.enabled and "id" in batch else None
        self._account([loss], [float(correct)], [wait], [compute], ids)
        return loss

    def _one_loop(self, steps: int) -> float:
        """Host: ``steps`` steps in one compiled call; each step's input wait is timed inside it."""
        laps = timing.Laps()
        ids_key = "id" if self.ids.enabled and "id" in self.built.dataset.element_spec else ""
        try:
            out = self.trainer.train_loop(
                self.iterator, steps, self.dataset.feature_key, self.dataset.label_key, ids_key
            )
        except integrity.READ_ERRORS as err:
            raise integrity.explain(err, self.dataset, self.built.files) from None
        per_step = laps.lap() / steps
        waits = [float(w) for w in out.waits]  # NaN under op determinism: not timed
        computes = [per_step if math.isnan(w) else max(0.0, per_step - w) for w in waits]
        self._account(list(out.losses), list(out.correct), waits, computes, out.ids)
        return float(out.losses[-1])

    def _account(self, losses, correct, waits, computes, ids) -> None:
        """Host: each step's loss, timings, example count, step counter and recorded ids."""
        batch = self.config.train.batch_size
        self.built_for = None  # the iterator moved past where it was built: an elastic re-entry rebuilds it
        for k, loss in enumerate(losses):
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at step {int(self.step) + 1}; lower LR= or check the data"
                )
            self.times.wait.append(waits[k])
            self.times.compute.append(computes[k])
            self.losses.append(loss)
            self.examples += batch
            self.step.assign_add(1)
            if ids is not None:
                self.ids.record_ids(int(self.step), ids[k])
            w = self.window
            w["loss"] += loss
            w["correct"] += float(correct[k])
            w["n"] += 1
            w["wait"] += 0.0 if math.isnan(waits[k]) else waits[k]
            w["timed"] = w["timed"] and not math.isnan(waits[k])

    def _log(self, s: int, w: dict[str, Any]) -> None:
        elapsed = w["t"].lap()
        global_batch = self.config.train.batch_size
        loss, acc = w["loss"] / w["n"], w["correct"] / (w["n"] * global_batch)
        rate = w["n"] * global_batch / elapsed if elapsed else 0.0
        epoch = (s - 1) // self.steps_per_epoch + 1
        wait = (w["wait"] / elapsed if elapsed else 0.0) if w["timed"] else None
        if self.backend.is_chief:
            log.info(
                "step %d/%d epoch %d  loss %.4f  acc %.3f  %.0f ex/s  input-wait %s",
                s,
                self.total,
                epoch,
                loss,
                acc,
                rate,
                "not timed (op determinism)" if wait is None else f"{100 * wait:.1f}%",
            )
            scalars = {"train/loss": loss, "train/accuracy": acc, "train/examples_per_sec": rate}
            if wait is not None:
                scalars["train/input_wait_fraction"] = wait
            self.summaries.scalars(s, scalars)

    def _eval_pipeline(self) -> pipeline.Built:
        return pipeline.build(
            self.dataset,
            self.config.data.eval_split,
            self.config.pipeline,
            None,
            batch_size=self.config.train.batch_size,
            training=False,
            repeat=False,
        )

    def check_eval_slices(self) -> None:
        """Host, before training: a ``train.eval_slices`` the eval batches cannot give fails now, not an epoch later."""
        if self.config.train.eval_slices and self.config.data.eval_split:
            evaluation.check_slice_feature(self._eval_pipeline().dataset.element_spec, self.config.train.eval_slices)

    def _evaluate(self, s: int, *, final: bool = False) -> dict[str, Any]:
        """Host, this worker only: one pass of the eval split; the chief logs it and writes its summaries."""
        if not self.config.data.eval_split:
            return {}
        result = self.trainer.evaluate(
            self._eval_pipeline().dataset,
            self.dataset.feature_key,
            self.dataset.label_key,
            num_classes=self.dataset.num_classes,
            label_names=self.dataset.info.get("label_names"),
            slice_key=self.config.train.eval_slices,
        )
        result["step"] = s
        self.evals.append(result)
        if self.backend.is_chief:
            self._report_eval(s, result, final)
        return result

    def _report_eval(self, s: int, result: dict[str, Any], final: bool) -> None:
        """Chief: the eval line (the final eval adds per-class recall and one line per slice), TensorBoard."""
        balanced = result["balanced_accuracy"]
        log.info(
            "eval at step %d: loss %.4f  accuracy %.4f  balanced accuracy %s  (%d examples of %s)",
            s,
            result["loss"],
            result["accuracy"],
            "-" if balanced is None else f"{balanced:.4f}",
            result["examples"],
            self.config.data.eval_split,
        )
        if final:
            log.info("%s", evaluation.recall_line(result))
            for line in evaluation.slice_lines(result):
                log.info("%s", line)
        self.summaries.scalars(s, evaluation.scalars(result))
        self.summaries.image(
            s,
            "eval/confusion_matrix",
            evaluation.confusion_png(result["confusion"], [c["name"] for c in result["per_class"]]),
        )

    def _position(self) -> dict[str, int] | None:
        if self.input_state is None:
            return None
        p = pipeline.Position.at(self.examples, self.input_state.order.num_examples, self.input_state.order.seed)
        return {"epoch": p.epoch, "consumed": p.consumed, "seed": p.seed}

    def _report(self, loss: float, start_step: int, final_eval: dict[str, Any], wall: float) -> dict[str, Any]:
        steps_run = len(self.times.compute)
        steady = sum(self.times.step_seconds()[1:])
        batch = self.config.train.batch_size
        metrics = {
            "dataset": self.dataset.name,
            "strategy": self.config.strategy.name,
            "replicas": self.backend.num_replicas,
            "workers": self.backend.topology.workers,
            "steps": int(self.step),
            "steps_this_run": steps_run,
            "resumed_from_step": start_step,
            "final_loss": loss,
            "loss_per_step": self.losses,
            "eval": final_eval,
            "evals": self.evals,
            # Wall time after the first step, checkpoint saves included (evaluation left out).
            "examples_per_sec": (steps_run - 1) * batch / wall if wall > 0 and steps_run > 1 else None,
            "examples_per_sec_steps_only": (steps_run - 1) * batch / steady if steady else None,
            "checkpoint_saves": len(self.saves),
            "checkpoint_save_s_median": float(np.median(self.saves)) if self.saves else None,
            "checkpoint_save_s_total": float(sum(self.saves)),
            "input_state": "position" if self.input_state is not None else "iterator",
            "input_state_bytes": self.input_state.nbytes() if self.input_state is not None else None,
            "input_position": self._position(),
            "input_wait_fraction": self.times.fraction(),
            "input_wait_per_step": self.times.per_step(),  # in a loop: timed in the graph (null: determinism)
            "steps_per_loop": self.config.train.steps_per_loop,
            "step_time_median_s": float(np.median(self.times.step_seconds())) if steps_run else None,
            "corrupt_records": self.built.corrupt.as_dict(),
            "shard_by": self.built.shard_by,
            **self.backend.extra_metrics(),
        }
        if self.backend.is_chief:
            write_json_atomic(self.config.run_dir / "metrics.json", json.dumps(metrics, indent=2))
        self.close_files()
        return metrics

    def close_files(self) -> None:
        """Host: TensorBoard events (the chief's; others have no writer) flushed, the id file closed."""
        self.summaries.flush()
        self.ids.close()
