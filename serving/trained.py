"""A finished training run read back: its resolved config, its dataset and the chief's model.

Host, once. Every backend's chief keeps its checkpoints in ``runs/<run>/checkpoints/`` with the
model under the key ``model``: Mirrored and MultiWorkerMirrored variables are saved as one copy,
Horovod's chief as its own, and a pipeline-parallel run's stages are the layers of one
``Sequential`` (``strategies.pipeline_parallel`` cuts the model, the checkpoint keeps it whole).
So a model built outside any strategy and restored from that checkpoint *is* the joined model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import tensorflow as tf
import tf_keras as keras

from ingest import datasets
from ingest.dataset import Dataset
from ingest.runconfig import RunConfig
from stoker import config as cfg
from stoker import storage
from stoker.errors import StokerError
from stoker.registry import RegistryError
from training import assembly, models

log = logging.getLogger("stoker")


class ExportError(StokerError):
    """A run that cannot be exported or served as asked; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Trained:
    """A run's config, dataset and model restored from checkpoint ``step``."""

    run_dir: Path
    config: RunConfig
    dataset: Dataset
    model: keras.Model
    step: int
    checkpoint: str


def read_config(run_dir: Path) -> RunConfig:
    """``run_dir/config.json`` as the frozen run config (PIPELINE=auto's saved choice left out)."""
    if storage.is_url(run_dir):
        raise ExportError(f"{run_dir}: export and predict read local runs only; copy the run folder here first")
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        found = sorted(p.parent.name for p in Path(run_dir).parent.glob("*/config.json"))
        raise ExportError(
            f"{path} does not exist: RUN={Path(run_dir).name} is not a training run "
            f"(runs under {Path(run_dir).parent}: {', '.join(found) or 'none'}); train it with `make train RUN=...`"
        )
    values = json.loads(path.read_text())
    values.pop("auto", None)
    return cfg.build(RunConfig, values)


def dataset_of(config: RunConfig, run_dir: Path) -> Dataset:
    """The run's dataset, as its config names it; one error when it is not registered any more."""
    try:
        return datasets.get(config.data)
    except RegistryError as err:
        raise ExportError(
            f"{run_dir}/config.json trained on DATASET={config.data.name}, which is not registered any more ({err}); "
            "install the package that registers it (entry point group stoker.datasets) and export again"
        ) from None


def checkpoint_path(run_dir: Path, step: int = 0) -> tuple[str, int]:
    """(path, step) of the chief's checkpoint at ``step`` (0: the newest); an error when there is none."""
    folder = Path(run_dir) / "checkpoints"
    state = tf.train.get_checkpoint_state(str(folder)) if folder.is_dir() else None
    paths = list(state.all_model_checkpoint_paths) if state else []
    steps = {int(p.rsplit("-", 1)[1]): p for p in paths}
    if not steps:
        raise ExportError(
            f"{folder} holds no checkpoint: RUN={Path(run_dir).name} never saved one; "
            f"train it (`make train RUN={Path(run_dir).name} ...`) and export again"
        )
    if step and step not in steps:
        raise ExportError(f"{folder} has no checkpoint of STEP={step}; it has steps {sorted(steps)} (STEP=0: newest)")
    chosen = step or max(steps)
    return steps[chosen], chosen


def model_name(config: RunConfig, dataset: Dataset) -> str:
    """The model the run trained (as ``training.assembly.build_model`` picks it)."""
    return config.train.model or dataset.default_model or models.DEFAULT_FOR.get(dataset.name, "shapes_cnn")


def load(run_dir: Path, step: int = 0) -> Trained:
    """Host: the run at ``run_dir`` with its model's variables restored from the chief's checkpoint."""
    config = read_config(run_dir)
    dataset = dataset_of(config, run_dir)
    path, step = checkpoint_path(run_dir, step)
    assembly.setup_precision_and_seeds(config, "one_device")  # the run's precision policy, before the model
    spec = dataset.element_spec[dataset.feature_key]
    model = models.build(model_name(config, dataset), tuple(spec.shape), dataset.num_classes)
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    except AssertionError as err:
        raise ExportError(
            f"{path} does not hold the variables of model {model_name(config, dataset)!r} for dataset "
            f"{dataset.name!r} ({str(err).splitlines()[0]}): was the checkpoint written by another model or data?"
        ) from None
    log.info("%s: %s restored from %s (step %d)", Path(run_dir).name, model.name, path, step)
    return Trained(Path(run_dir), config, dataset, model, step, path)
