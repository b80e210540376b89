"""Beam's GCS IO (what ``make prepare RUNNER=DataflowRunner`` stages and writes with) against a
local GCS emulator (``gcp-storage-emulator`` on 127.0.0.1).

TensorFlow's own ``gs://`` filesystem, which stoker's readers and writers use, cannot be pointed
at an emulator (docs/object-storage.md), so it is not tested here; this checks the Beam side only.
It needs ``google-cloud-storage`` (Beam's ``gcp`` extra), which is not part of stoker's stack:
without it the test skips (listed in ``tests/conftest.py``'s ``ALLOWED_SKIPS``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from stoker import ports, processes

pytest.importorskip("google.cloud.storage", reason="Beam's GCS IO needs google-cloud-storage (apache-beam[gcp])")
pytest.importorskip("gcp_storage_emulator", reason="needs gcp-storage-emulator (PyPI)")

BUCKET = "stoker-gcs-test"


@pytest.fixture
def emulator(monkeypatch):
    port = ports.free_ports(1)[0]
    exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) or "gcp-storage-emulator"
    cmd = [exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory", f"--default-bucket={BUCKET}"]
    proc = processes.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "gcp-storage-emulator did not start"
            time.sleep(0.2)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)  # google-cloud-storage's own variable
    yield url
    processes.stop([proc], grace_s=5.0)


@pytest.mark.timeout(120)
def test_beam_filesystems_write_list_read_rename_delete_on_gs(emulator):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    from ingest.sources import tfrecord

    FileSystems.set_options(PipelineOptions(["--project=stoker-test"]))
    shard = f"gs://{BUCKET}/data/shapes/train-00000-of-00001.tfrecord"
    records = [f"record {i}".encode() for i in range(5)]
    with FileSystems.create(shard + ".tmp") as f:
        for r in records:
            f.write(tfrecord.frame(r))
    FileSystems.rename([shard + ".tmp"], [shard])
    listed = [m.path for r in FileSystems.match([f"gs://{BUCKET}/data/shapes/*"]) for m in r.metadata_list]
    assert listed == [shard]
    with FileSystems.open(shard) as f:
        data = f.read()
    assert data == b"".join(tfrecord.frame(r) for r in records)
    FileSystems.delete([shard])
    assert not FileSystems.exists(shard)
