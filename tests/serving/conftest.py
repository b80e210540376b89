"""Trained runs for the serving tests: tiny ones, trained in this process (real loop, real checkpoints)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ingest import datasets
from ingest import runconfig as run_config
from training import controller

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples" / "plugin"))  # the plug-in example, without installing it
from stoker_rings import Rings  # noqa: E402


def train(runs: Path, run: str, items: list[str], sets: str) -> Path:
    """``make train RUN=<run> ...`` in this process; the run's folder."""
    config = run_config.from_args(
        [f"RUN={run}", "CONFIG=tiny", "SEED=0", *items],
        [f"train.runs_dir={runs} train.checkpoint_every=0 train.log_every=100 {sets}"],
    )
    controller.run(config)
    return runs / run


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def shapes_runs(shapes_dir, runs_dir) -> dict[str, Path]:
    """shapes (32 px) trained 8 steps under mirrored (2 replicas) and under pipeline (2 stages)."""
    sets = f"data.data_dir={shapes_dir} data.image_size=32 data.train_examples=256 data.eval_examples=64"
    common = ["DATASET=shapes", "STEPS=8", "BATCH=32", "DEVICES=2"]
    return {
        "mirrored": train(runs_dir, "shapes_mirrored", [*common, "STRATEGY=mirrored"], sets),
        "pipeline": train(runs_dir, "shapes_pipeline", [*common, "STRATEGY=pipeline", "STAGES=2"], sets),
    }


@pytest.fixture(scope="session")
def clicks_run(clicks_dir, runs_dir) -> Path:
    sets = f"data.data_dir={clicks_dir} data.train_examples=1000 data.eval_examples=200"
    return train(runs_dir, "clicks_mirrored", ["DATASET=clicks", "STEPS=10", "BATCH=64", "STRATEGY=mirrored"], sets)


@pytest.fixture(scope="session")
def rings_data(tmp_path_factory) -> str:
    from ingest.options import DataOptions

    root = str(tmp_path_factory.mktemp("rings"))
    Rings(DataOptions(name="rings", data_dir=root)).prepare()
    return root


@pytest.fixture
def rings_registered():
    """The plug-in registered for one test (as its entry point would register it)."""
    with datasets.REGISTRY.temporary("rings", Rings):
        yield


@pytest.fixture(scope="session")
def rings_pipeline_run(rings_data, runs_dir) -> Path:
    """The plug-in dataset, trained under pipeline parallelism (clicks_mlp cut into 2 stages)."""
    with datasets.REGISTRY.temporary("rings", Rings):
        return train(
            runs_dir,
            "rings_pipeline",
            ["DATASET=rings", "MODEL=clicks_mlp", "STEPS=12", "BATCH=64", "STRATEGY=pipeline", "STAGES=2"],
            f"data.data_dir={rings_data} data.shuffle_buffer=256",
        )
