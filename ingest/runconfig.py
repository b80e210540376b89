"""The config root: one frozen run config composed of every package's options section.

Every entry point (``python -m training|profiles|ingest|benchmarks``) imports it from here
without climbing: ``ingest`` is the lowest floor with an entry point that sees every options
section. It imports only the leaf option modules (``ingest.options``, ``strategies.options``,
the ground floor) and defines the train and profile sections.

Resolution order: dataclass defaults, the YAML preset (``configs/<name>.yaml``, default
``configs/default.yaml``), then ``KEY=value`` from the make line: short names (``EPOCHS=3``)
map to dotted keys below, and ``--set "pipeline.cache=false data.shuffle_buffer=1000"``
takes any dotted key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Literal

from ingest.options import DataOptions, PipelineOptions
from stoker import config as cfg
from stoker import storage
from stoker.files import write_json_atomic
from strategies.options import StrategyOptions

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
__all__ = ["ALIASES", "RunConfig", "TrainOptions", "ProfileOptions", "from_args", "write_json_atomic"]

# make variable -> dotted key
ALIASES = {
    "DATASET": "data.name",
    "DATA_DIR": "data.data_dir",
    "SEED": "train.seed",
    "SHARDS": "data.shards",
    "SOURCE": "data.source",
    "NAME": "data.prepared_name",
    "LABEL": "data.label",
    "FEATURE": "data.feature",
    "PIPELINE": "pipeline.preset",
    "DATA_SERVICE": "pipeline.data_service",
    "STRATEGY": "strategy.name",
    "DEVICES": "strategy.devices",
    "NP": "strategy.processes",
    "HOSTS": "strategy.hosts",
    "ELASTIC": "strategy.elastic",
    "MIN_NP": "strategy.min_processes",
    "MAX_NP": "strategy.max_processes",
    "DISCOVERY": "strategy.discovery",
    "STAGES": "strategy.stages",
    "MICROBATCHES": "strategy.microbatches",
    "REMAT": "strategy.remat",
    "TPU": "strategy.tpu",
    "EPOCHS": "train.epochs",
    "BATCH": "train.batch_size",
    "STEPS": "train.steps",
    "LR": "train.learning_rate",
    "MODEL": "train.model",
    "RUN": "train.run_name",
    "MIXED_PRECISION": "train.mixed_precision",
    "DETERMINISTIC": "train.deterministic",
    "STEPS_PER_LOOP": "train.steps_per_loop",
}
# make variables that are not config keys (they pick the preset or go to other tools)
NON_CONFIG = {"CONFIG", "RUNNER"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """The training loop."""

    model: str = ""  # registered model, or keras:<Application> ('' picks the dataset's default: shapes_cnn)
    weights: str = ""  # a local weights file loaded into the model before training ('' : initialized by seed)
    epochs: int = 3  # passes over the train split
    steps: int = 0  # stop after this many steps in total (0: epochs x steps per epoch)
    batch_size: int = 64  # global batch, split over every replica
    learning_rate: float = 0.01  # for the global batch (see lr_scaling)
    lr_scaling: Literal["none", "linear"] = "none"  # linear: multiply by replicas (Goyal et al.)
    optimizer: Literal["sgd", "adam"] = "adam"
    seed: int = 0  # model initialization (data.seed orders the data)
    deterministic: bool = False  # op determinism + deterministic tf.data: bit-for-bit repeatable runs
    mixed_precision: bool = False  # bfloat16 on CPU/TPU, float16 with loss scaling on GPU
    checkpoint_every: int = 50  # steps between checkpoints (0: only at the end)
    keep_checkpoints: int = 2  # checkpoints kept per worker
    log_every: int = 20  # steps between progress lines
    eval_every_epoch: bool = True  # evaluate the eval split after each epoch
    run_name: str = "default"  # runs/<run_name>/
    runs_dir: str = "runs"  # runs/<run_name>/ go here; a bucket URL (s3://bucket/runs) works too
    prepare_missing: bool = True  # run the dataset's prepare step when its files are missing
    record_ids: bool = False  # append each step's example ids to runs/<run>/ids/worker_<i>.txt (tests)
    steps_per_loop: int = 1  # steps per compiled call; logs, checkpoints, eval and SIGTERM at loop ends
    loss_weights: Literal["none", "balanced"] = "none"  # balanced: weight class c by N / (classes * n_c)
    eval_slices: str = ""  # an eval batch feature: metrics per value ('' none; floats: 4 quantile bins)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size={self.batch_size} must be >= 1 (BATCH=64, say)")
        if self.epochs < 1 or self.steps < 0:
            raise ValueError(f"train.epochs={self.epochs} must be >= 1 and train.steps={self.steps} >= 0")
        if self.learning_rate <= 0:
            raise ValueError(f"train.learning_rate={self.learning_rate} must be > 0")
        if self.checkpoint_every < 0 or self.log_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("train.checkpoint_every >= 0, train.log_every >= 1, train.keep_checkpoints >= 1")
        if self.steps_per_loop < 1:
            raise ValueError(f"train.steps_per_loop={self.steps_per_loop} must be >= 1 (1: one step per call)")
        if not self.run_name or "/" in self.run_name:
            raise ValueError(f"train.run_name={self.run_name!r}: give a plain folder name (RUN=name)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProfileOptions:
    """The profiler harness (``make profile``)."""

    steps: int = 30  # timed steps per scenario
    warmup_steps: int = 5  # steps run before timing
    trace_steps: int = 5  # steps captured in the TensorFlow profiler trace (at most 10)
    stage_batches: int = 20  # batches timed per pipeline prefix
    reps: int = 5  # timed windows per measurement (the median is reported; steps are split over them)

    def __post_init__(self) -> None:
        if not 0 <= self.trace_steps <= 10:
            raise ValueError(f"profile.trace_steps={self.trace_steps} must be within 0..10")
        if self.steps < 1 or self.warmup_steps < 0 or self.stage_batches < 1:
            raise ValueError("profile.steps >= 1, profile.warmup_steps >= 0, profile.stage_batches >= 1")
        if not 1 <= self.reps <= self.steps:
            raise ValueError(f"profile.reps={self.reps} must be within 1..profile.steps ({self.steps})")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run needs, resolved once and written to runs/<name>/config.json."""

    data: DataOptions = DataOptions()
    pipeline: PipelineOptions = PipelineOptions()
    strategy: StrategyOptions = StrategyOptions()
    train: TrainOptions = TrainOptions()
    profile: ProfileOptions = ProfileOptions()

    @property
    def run_dir(self) -> Path | storage.Url:
        """``<runs_dir>/<run_name>``: a local folder, or a URL (``s3://``, ``gs://``) written through gfile."""
        return storage.location(self.train.runs_dir) / self.train.run_name

    def __post_init__(self) -> None:
        # DETERMINISTIC=1 promises the same example order: the pipeline must keep order too.
        if self.train.deterministic and not self.pipeline.deterministic:
            object.__setattr__(self, "pipeline", dataclasses.replace(self.pipeline, deterministic=True))
        if self.strategy.elastic:
            _check_elastic_batch(self.train.batch_size, *self.strategy.np_range)

    def to_json(self) -> str:
        return json.dumps(cfg.to_dict(self), indent=2, sort_keys=True)


def _check_elastic_batch(batch: int, low: int, high: int) -> None:
    """An elastic run may have any rank count in low..high: the global batch must split over each."""
    bad = [n for n in range(low, high + 1) if batch % n]
    if bad:
        lcm = math.lcm(*range(low, high + 1))
        raise ValueError(
            f"train.batch_size={batch} (BATCH) does not split evenly over {', '.join(map(str, bad))} ranks, "
            f"which MIN_NP={low}..MAX_NP={high} allows: use a multiple of {lcm}, or narrow MIN_NP/MAX_NP"
        )


def from_args(items: list[str], sets: list[str] | None = None) -> RunConfig:
    """Resolve a RunConfig from make-line ``KEY=value`` items and ``--set`` dotted items."""
    pairs = cfg.parse_overrides(items)
    preset = pairs.pop("CONFIG", "default")
    for key in NON_CONFIG:
        pairs.pop(key, None)
    overrides: dict[str, str] = {}
    for key, value in pairs.items():
        if key.isupper():
            if key not in ALIASES:
                raise cfg.ConfigError(
                    f"unknown make variable {key}{cfg._closest(key, ALIASES)}; known: {', '.join(sorted(ALIASES))}"
                )
            key = ALIASES[key]
        overrides[key] = value
    for item in sets or []:
        overrides.update(cfg.parse_overrides(item.split()))
    path = Path(preset) if preset.endswith(".yaml") else CONFIG_DIR / f"{preset}.yaml"
    return cfg.load(RunConfig, path, overrides)
