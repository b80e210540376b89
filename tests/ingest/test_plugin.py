"""A dataset from another installed package joins through the entry point and trains via make."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from ingest.testing import DatasetContract

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    src = tmp_path_factory.mktemp("plugin") / "plugin"
    shutil.copytree(os.path.join(REPO, "examples", "plugin"), src)
    subprocess.run([*PIP, "install", "--no-deps", "--no-build-isolation", str(src)], check=True, timeout=300)
    try:
        yield src
    finally:
        subprocess.run([*PIP, "uninstall", "-y", "stoker-rings"], check=True, timeout=120)


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, **kw)


@pytest.mark.slow
def test_plugin_is_listed_and_trains_through_make(installed_plugin, tmp_path):
    listing = _run([sys.executable, "-m", "ingest", "datasets"], timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[:2] == ["rings", "stoker-rings"] for line in listing.stdout.splitlines()), listing.stdout
    data, runs = tmp_path / "data", tmp_path / "runs"
    out = _run(
        [
            "make",
            "train",
            "DATASET=rings",
            f"DATA_DIR={data}",
            "MODEL=clicks_mlp",
            "STRATEGY=one_device",
            "EPOCHS=2",
            "BATCH=64",
            "RUN=rings",
            f"SET=train.runs_dir={runs}",
        ],
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    metrics = json.loads((runs / "rings" / "metrics.json").read_text())
    assert metrics["dataset"] == "rings" and metrics["steps"] == 2 * (2048 // 64)
    assert metrics["eval"]["accuracy"] > 0.9, metrics["eval"]  # two separable rings
    assert json.loads((runs / "rings" / "config.json").read_text())["data"]["name"] == "rings"


class TestRingsContract(DatasetContract):
    """The plug-in's own contract test, written with stoker's public test kit."""

    split_sizes = {"train": 2048, "validation": 256}

    @pytest.fixture(scope="class")
    def data_dir(self, installed_plugin, tmp_path_factory):
        from stoker_rings import Rings

        type(self).dataset_class = Rings
        root = tmp_path_factory.mktemp("rings")
        from ingest.options import DataOptions

        Rings(DataOptions(name="rings", data_dir=str(root))).prepare()
        return str(root)

    @pytest.fixture(scope="class")
    def dataset(self, data_dir):
        from stoker_rings import Rings

        from ingest.options import DataOptions

        return Rings(DataOptions(name="rings", data_dir=data_dir))
