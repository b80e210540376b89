"""The serving section: what ``make export`` and ``make predict`` read from the make line.

``RUN=``, ``FORMAT=``, ``QUANTIZE=``, ``STEP=``, ``SOURCE=``, ``OUTPUT=`` map to ``serve.*`` keys;
``SET="serve.skip_bad=true"`` sets any other. ``RUNNER=`` and ``BEAM_ARGS=`` go to Beam unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from stoker import config as cfg
from stoker.config import ConfigError

ALIASES = {
    "RUN": "run",
    "FORMAT": "format",
    "QUANTIZE": "quantize",
    "STEP": "step",
    "SOURCE": "source",
    "OUTPUT": "output",
}
NON_CONFIG = {"RUNNER"}  # for Beam, not a key


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """Export and batch prediction of one training run."""

    run: str = "default"  # RUN=: the run folder under runs_dir
    runs_dir: str = "runs"  # where runs live (train.runs_dir of the run)
    step: int = 0  # STEP=: the checkpoint step to export (0: the newest); predict: the export of that step
    format: Literal["saved_model", "tflite"] = "saved_model"  # FORMAT=
    quantize: Literal["none", "dynamic", "int8"] = "none"  # QUANTIZE= (tflite): weights only, or int8 calibrated
    calibration_examples: int = 256  # int8: examples drawn through the run's own pipeline to calibrate
    source: str = ""  # SOURCE= (predict): a file, a folder or a quoted glob of the run's dataset's records
    output: str = ""  # OUTPUT= (predict): folder of the predictions ('' : runs/<run>/predictions)
    batch_size: int = 64  # predict: examples per RunInference call (at most)
    shards: int = 2  # predict: files the predictions are written into
    skip_bad: bool = False  # predict: skip records that do not parse (counted in the summary) instead of failing

    def __post_init__(self) -> None:
        if not self.run or "/" in self.run:
            raise ValueError(f"serve.run={self.run!r}: give a plain run folder name (RUN=name)")
        if self.step < 0 or self.calibration_examples < 1 or self.batch_size < 1 or self.shards < 1:
            raise ValueError(
                "serve.step >= 0, serve.calibration_examples >= 1, serve.batch_size >= 1 and serve.shards >= 1"
            )
        if self.quantize != "none" and self.format != "tflite":
            raise ValueError(f"QUANTIZE={self.quantize} is for FORMAT=tflite (a SavedModel keeps float32 weights)")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.run


def from_args(items: list[str], sets: list[str] | None = None) -> ServeOptions:
    """``RUN=x FORMAT=tflite`` items and ``--set "serve.skip_bad=true"`` into :class:`ServeOptions`."""
    values: dict[str, str] = {}
    for key, value in cfg.parse_overrides(items).items():
        if key in NON_CONFIG:
            continue
        if key.isupper():
            if key not in ALIASES:
                raise ConfigError(
                    f"unknown make variable {key}{cfg._closest(key, ALIASES)} for export/predict; "
                    f'known: {", ".join(sorted(ALIASES))} (others: SET="serve.<key>=value")'
                )
            key = ALIASES[key]
        values[key.removeprefix("serve.")] = value
    for item in sets or []:
        for key, value in cfg.parse_overrides(item.split()).items():
            if not key.startswith("serve."):
                raise ConfigError(f"SET {key!r}: export and predict take serve.<key> (e.g. serve.skip_bad=true)")
            values[key.removeprefix("serve.")] = value
    return cfg.build(ServeOptions, values, prefix="serve.")
