"""tf.data service with real dispatcher and worker processes on 127.0.0.1.

The data: ``FILES`` TFRecord shards of ``PER_FILE`` records; record ``i`` carries ``id = i``
and lives in file ``i // PER_FILE``, so a test names exactly which example (and which
split: in DYNAMIC mode a split is one file) went missing or came twice. The client reads
one epoch through ``ingest.pipeline.build`` with ``DATA_SERVICE`` set, at its own pace, and
faults are injected between batches.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

# A worker reads each record this slowly, so an epoch lasts a few seconds and a fault lands
# while splits are in flight (a test-only op that runs on the workers, unlike a py_function).
from tensorflow.python.data.experimental.ops import testing as tf_data_testing  # private API: tests only

from ingest import datasets, pipeline, service
from ingest.built import Position
from ingest.dataset import Dataset
from ingest.ledger import Ledger
from ingest.options import DataOptions, PipelineOptions
from ingest.sources import tfrecord
from tests.conftest import REPO

FILES, PER_FILE, BATCH = 32, 20, 8
RECORD_US = 20_000
TOTAL = FILES * PER_FILE
log = logging.getLogger(__name__)


class Ids(Dataset):
    """Records that carry only their index."""

    name = "ids"

    def read(self, path: tf.Tensor) -> tf.data.Dataset:
        return tfrecord.read(path).apply(tf_data_testing.sleep(RECORD_US))

    def parse(self, records: tf.Tensor) -> dict[str, tf.Tensor]:
        return tf.io.parse_example(records, {"id": tf.io.FixedLenFeature([], tf.int64)})

    @property
    def element_spec(self) -> dict[str, tf.TensorSpec]:
        return {"id": tf.TensorSpec([], tf.int64)}


def write_ids(root: Path) -> Ids:
    """The ``ids`` dataset's ``FILES`` shards under ``root/ids/``."""
    (root / "ids").mkdir()
    for f in range(FILES):
        with tf.io.TFRecordWriter(str(root / "ids" / f"train-{f:05d}-of-{FILES:05d}.tfrecord")) as w:
            for i in range(f * PER_FILE, (f + 1) * PER_FILE):
                feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return Ids(DataOptions(name="ids", data_dir=str(root)))


def cluster_spec(work_dir: Path) -> service.ClusterSpec:
    """A dispatcher and 2 workers on free ports, journaling to ``work_dir``."""
    return service.ClusterSpec(
        workers=2,
        port=service.free_port(3),
        work_dir=str(work_dir),
        worker_timeout_ms=10_000,
        heartbeat_ms=500,
    )


@pytest.fixture(scope="module")
def ids_dataset(tmp_path_factory) -> Ids:
    return write_ids(tmp_path_factory.mktemp("svc"))


@pytest.fixture()
def cluster(tmp_path):
    with service.LocalCluster(cluster_spec(tmp_path / "journal"), quiet=True) as c:
        yield c


def _epoch(dataset: Ids, cluster: service.LocalCluster, timeout_s: float = 60.0, *, exactly_once: bool = True):
    return _epoch_at(dataset, cluster.spec.address, timeout_s, exactly_once=exactly_once)


def _epoch_at(dataset: Ids, address: str, timeout_s: float = 60.0, *, exactly_once: bool = True):
    opts = PipelineOptions(
        preset="optimized", data_service=address, service_timeout_s=timeout_s, service_exactly_once=exactly_once
    )
    built = pipeline.build(dataset, "train", opts, batch_size=BATCH, training=False, repeat=False)
    return iter(built.dataset)


def _read(it, seen: list[int], batches: int | None = None) -> None:
    """Append the ids of up to ``batches`` batches (all, when None) to ``seen``."""
    for n, batch in enumerate(it):
        seen.extend(int(i) for i in batch["id"])
        if batches is not None and n + 1 >= batches:
            return


def _tally(seen: list[int]) -> tuple[set[int], list[int], set[int]]:
    """(lost ids, duplicated ids, files with a lost id)."""
    counts = collections.Counter(seen)
    lost = set(range(TOTAL)) - set(counts)
    return lost, sorted(i for i, c in counts.items() if c > 1), {i // PER_FILE for i in lost}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dynamic_epoch_exactly_once(ids_dataset, cluster, shapes_dir):
    seen: list[int] = []
    _read(_epoch(ids_dataset, cluster), seen)
    lost, dup, _ = _tally(seen)
    assert not lost and not dup, f"lost {sorted(lost)}, duplicated {dup}"
    assert len(seen) == TOTAL
    # The training pipeline (parse, shuffle, augment, normalize) on the workers, one epoch. Batches
    # are cut on the client, so the epoch ends whole: all 256 examples once, 16 full batches.
    shapes = datasets.get(DataOptions(name="shapes", data_dir=shapes_dir, image_size=32))
    opts = PipelineOptions(preset="optimized", data_service=cluster.spec.address, service_timeout_s=60)
    built = pipeline.build(shapes, "train", opts, batch_size=16, training=True, seed=0, shuffle_buffer=64, repeat=False)
    batches = list(built.dataset)
    counts = collections.Counter(int(i) for batch in batches for i in batch["id"])
    assert set(counts.values()) == {1}, f"duplicated {sorted(i for i, c in counts.items() if c > 1)}"
    assert set(counts) == set(range(256)), sorted(set(range(256)) - set(counts))
    assert {b["image"].shape for b in batches} == {(16, 32, 32, 3)}
    # What a checkpoint keeps instead of the iterator: the ledger of the epoch, all consumed.
    ledger = Ledger.from_bytes(built.ledger(), 256)
    assert (ledger.epoch, ledger.count()) == (1, 0) and len(built.ledger()) < 64


def worker_restart(
    dataset: Ids, cluster: service.LocalCluster, *, exactly_once: bool = True
) -> tuple[list[int], set[int], list[int], set[int]]:
    """One epoch with worker 0 SIGKILLed after a quarter and restarted: (seen, lost, duplicated, lost files).

    Also what ``python -m benchmarks.measure service`` repeats for the README's loss counts.
    """
    it, seen = _epoch(dataset, cluster, exactly_once=exactly_once), []
    _read(it, seen, batches=TOTAL // BATCH // 4)
    cluster.kill_worker(0)
    cluster.start_worker(0)
    _read(it, seen)
    return seen, *_tally(seen)


def _log_restart(kind: str, seen: list[int], lost: set[int], lost_files: set[int], dup: list[int]) -> None:
    log.warning(
        "worker restart (%s): %d of %d examples seen, %d lost in %d files %s, %d duplicated",
        kind,
        len(set(seen)),
        TOTAL,
        len(lost),
        len(lost_files),
        sorted(lost_files),
        len(dup),
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_killed_and_restarted_loses_nothing(ids_dataset, cluster, record_property, caplog):
    # Counted: ids seen by the client in one epoch. The service loses the killed worker's files in
    # flight; the client reads those examples from their files after the job, and drops any id
    # the restarted worker sends again.
    with caplog.at_level(logging.WARNING, logger="ingest.service_once"):
        seen, lost, dup, lost_files = worker_restart(ids_dataset, cluster)
    record_property("lost_examples", len(lost))
    record_property("duplicated_examples", len(dup))
    _log_restart("exactly once", seen, lost, lost_files, dup)
    assert not lost and not dup, f"lost {sorted(lost)}, duplicated {dup}"
    assert len(seen) == TOTAL
    # The fault did land on files in flight: the client read some examples itself.
    assert "reading them here" in caplog.text, "no example was missing after the restart: the fault came too late"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_at_most_once_switch_loses_at_most_the_splits_in_flight(
    ids_dataset, cluster, record_property, shapes_dir, tmp_path
):
    # pipeline.service_exactly_once=false keeps the old client: its training iterator can be held
    # by a checkpoint (the service part saves no position; a restored iterator starts a new job).
    shapes = datasets.get(DataOptions(name="shapes", data_dir=shapes_dir, image_size=32))
    opts = PipelineOptions(data_service=cluster.spec.address, service_timeout_s=60, service_exactly_once=False)
    built = pipeline.build(shapes, "train", opts, batch_size=16, training=True, seed=0, shuffle_buffer=64)
    it = iter(built.dataset)
    next(it)
    path = tf.train.Checkpoint(iterator=it).save(str(tmp_path / "ckpt"))
    again = iter(built.dataset)
    tf.train.Checkpoint(iterator=again).restore(path)
    assert next(again)["image"].shape == (16, 32, 32, 3)
    service.close_sessions(cluster.spec.address)  # both jobs would go on taking the workers' time
    # TensorFlow's own guarantee. No id twice; lost ids fill only files (splits) the killed worker
    # had taken and not finished.
    seen, lost, dup, lost_files = worker_restart(ids_dataset, cluster, exactly_once=False)
    record_property("lost_examples", len(lost))
    record_property("lost_files", len(lost_files))
    _log_restart("at most once", seen, lost, lost_files, dup)
    assert not dup, f"ids seen twice: {dup}"
    bound = service.restart_loss_bound()  # counts over repeated runs: benchmarks/results/service.json
    assert len(lost_files) <= bound, f"lost ids in {len(lost_files)} files, more than 4 x cycle_length = {bound}"
    assert len(seen) >= TOTAL - bound * PER_FILE


def _training(dataset: Ids, address: str, position: Position) -> pipeline.Built:
    opts = PipelineOptions(preset="optimized", data_service=address, service_timeout_s=60)
    return pipeline.build(
        dataset, "train", opts, batch_size=BATCH, training=True, seed=3, shuffle_buffer=32, position=position
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_resumed_from_its_ledger_each_example_once_per_epoch(ids_dataset, cluster, record_property):
    # A run reads 1.5 epochs and saves (position, ledger) as the controller does; a new pipeline
    # built from them reads on to the end of epoch 1, with worker 0 killed and restarted on the way.
    per_epoch = TOTAL // BATCH
    first = _training(ids_dataset, cluster.spec.address, Position(seed=3))
    it, seen = iter(first.dataset), []
    _read(it, seen, batches=per_epoch + per_epoch // 2)
    saved = first.ledger()
    record_property("ledger_bytes", len(saved))
    log.warning("ledger after 1.5 epochs of %d examples: %d bytes", TOTAL, len(saved))
    assert len(saved) <= 64 * 1024
    del it
    position = dataclasses.replace(Position.at(len(seen), TOTAL, 3), ledger=saved)
    resumed = iter(_training(ids_dataset, cluster.spec.address, position).dataset)
    _read(resumed, seen, batches=per_epoch // 4)
    cluster.kill_worker(0)
    cluster.start_worker(0)
    _read(resumed, seen, batches=per_epoch - per_epoch // 2 - per_epoch // 4)
    for epoch in range(2):
        lost, dup, _ = _tally(seen[epoch * TOTAL : (epoch + 1) * TOTAL])
        assert not lost and not dup, f"epoch {epoch}: lost {sorted(lost)}, duplicated {dup}"
    assert len(seen) == 2 * TOTAL


@pytest.mark.slow
@pytest.mark.timeout(240)  # a restarted dispatcher replays its journal; clients retry with backoff
def test_dispatcher_restarted_from_journal_continues(ids_dataset, cluster, record_property):
    it, seen = _epoch(ids_dataset, cluster), []
    _read(it, seen, batches=TOTAL // BATCH // 3)
    cluster.kill_dispatcher()
    cluster.start_dispatcher()  # same port, same work_dir: replays the journal
    _read(it, seen)
    lost, dup, _ = _tally(seen)
    record_property("lost_examples", len(lost))
    log.warning("dispatcher restart: %d of %d seen, %d lost, %d duplicated", len(set(seen)), TOTAL, len(lost), len(dup))
    assert not dup, f"ids seen twice: {dup}"
    assert not lost, f"lost {len(lost)} ids in files {sorted({i // PER_FILE for i in lost})}"


# The client of the next test, in its own process: once every worker is gone its pull thread
# stays blocked in the service's GetNext, which nothing can cancel, so its client would
# heartbeat to the stopped dispatcher until this process exits. A training run that fails
# this way exits; so does this client.
_LONELY_CLIENT = """
import sys, time
import tensorflow as tf
from tests.ingest.test_service import BATCH, Ids, _epoch_at
from ingest.options import DataOptions
it = iter(_epoch_at(Ids(DataOptions(name="ids", data_dir=sys.argv[1])), sys.argv[2], timeout_s=4.0))
next(it), next(it)
print("READ", flush=True)
sys.stdin.readline()  # the test kills every worker, then says go
start = time.monotonic()
try:
    for _ in it:
        pass
    print("NO ERROR", flush=True)
except tf.errors.OpError as err:
    print("FAILED", round(time.monotonic() - start, 1), "service_timeout_s" in str(err), flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_client_with_every_worker_gone_fails_within_the_timeout(ids_dataset, cluster):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    client = subprocess.Popen(
        [sys.executable, "-c", _LONELY_CLIENT, str(ids_dataset.options.data_dir), cluster.spec.address],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "READ"
        for i in range(cluster.spec.workers):
            cluster.kill_worker(i)
        client.stdin.write("go\n")
        client.stdin.flush()
        verdict = client.stdout.readline().split()
    finally:
        client.kill()
        client.wait()
    assert verdict[0] == "FAILED" and verdict[2] == "True", verdict
    # The workers' prefetched elements may arrive first; after them, one timeout.
    assert float(verdict[1]) < 4.0 + 10.0, f"failed after {verdict[1]} s, not within the 4 s timeout"


def test_cluster_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="workers=-1"):
        service.ClusterSpec(workers=-1)
    with pytest.raises(ValueError, match="port=70000"):
        service.ClusterSpec(port=70000)
    spec = service.ClusterSpec(workers=2, port=6000)
    assert spec.address == "grpc://127.0.0.1:6000" and spec.worker_port(1) == 6002


def test_exposure_warning_is_loud(caplog):
    with caplog.at_level(logging.WARNING, logger="ingest.service"):
        service.warn_exposure([5050, 5051])
    text = caplog.text
    assert "EVERY network interface" in text and "NO authentication" in text and "5050, 5051" in text


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_servers_end_when_make_data_service_is_killed(tmp_path):
    """SIGKILL of `python -m ingest service` (what `make data-service` runs): its dispatcher and
    workers end within 10 s (each is started with PR_SET_PDEATHSIG, stoker/processes.py), and so does
    the launcher's watchdog."""
    import psutil

    port = service.free_port(3)
    cmd = [sys.executable, "-m", "ingest", "service", "--workers", "2", "--port", str(port)]
    cmd += ["--work-dir", str(tmp_path / "journal")]
    main = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in main.stdout:
            if "tf.data service ready" in line:
                break
        servers = psutil.Process(main.pid).children(recursive=True)
        roles = sorted(p.cmdline()[3] if p.cmdline()[2] == "ingest.service" else "watchdog" for p in servers)
        assert roles == ["dispatcher", "watchdog", "worker", "worker"], [p.cmdline() for p in servers]
    finally:
        main.kill()
        main.wait()
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, f"still running 10 s after the launcher was killed: {[p.cmdline() for p in alive]}"
