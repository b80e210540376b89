"""``make export RUN=<run>``: the run's SavedModel under ``runs/<run>/export/<step>/``, atomically.

The layout is TF Serving's: a model base folder (``export/``) holding one numbered version per
exported checkpoint step. Each version is written under ``export/.<step>.partial/`` and renamed
into place when complete, so TF Serving (which polls the base folder) and ``make predict`` never
load half a model. ``assets.extra/stoker.json`` beside it says what was exported: run, dataset,
step, signatures and their inputs, class names.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from serving import signatures, trained
from serving.options import ServeOptions
from serving.trained import ExportError
from stoker import files

log = logging.getLogger("stoker")
META = "assets.extra/stoker.json"


def export_dir(run_dir: Path) -> Path:
    """The model base folder TF Serving is pointed at."""
    return Path(run_dir) / "export"


def saved_model(run: trained.Trained) -> Path:
    """Host: write ``run``'s SavedModel to ``export/<step>/`` (replacing an earlier export of that step)."""
    base = export_dir(run.run_dir)
    final, partial = base / str(run.step), base / f".{run.step}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    served = signatures.Served(run.dataset, run.model)
    functions = served.signature_functions()
    tf.saved_model.save(served, str(partial), signatures=functions)
    files.atomic_write(partial / META, json.dumps(metadata(run, functions), indent=2))
    if final.exists():
        old = base / f".{run.step}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    log.info("exported %s (step %d) to %s: signatures %s", run.run_dir.name, run.step, final, ", ".join(functions))
    return final


def metadata(run: trained.Trained, functions: dict[str, Any]) -> dict[str, Any]:
    """What ``assets.extra/stoker.json`` records about an export."""
    inputs = {signatures.EXAMPLES: "examples", signatures.IMAGES: "images"}
    return {
        "run": run.run_dir.name,
        "dataset": run.dataset.name,
        "dataset_format": run.dataset.format,
        "feature_key": run.dataset.feature_key,
        "model": run.model.name,
        "step": run.step,
        "checkpoint": run.checkpoint,
        "signatures": {name: inputs[name] for name in functions},
        "class_names": run.dataset.label_names,
        "example_features": sorted((run.dataset.example_features() or {}).keys()),
    }


def latest(run_dir: Path, step: int = 0) -> Path:
    """The export of ``step`` (0: the newest) of the run at ``run_dir``; an error saying to export first."""
    base = export_dir(run_dir)
    versions = sorted(int(p.name) for p in base.glob("*") if p.name.isdigit() and (p / "saved_model.pb").is_file())
    if not versions or (step and step not in versions):
        what = f"no export of STEP={step}" if step and versions else "no export"
        raise ExportError(
            f"{base} holds {what} (exported steps: {versions or 'none'}); run "
            f"`make export RUN={Path(run_dir).name}{f' STEP={step}' if step else ''}` first"
        )
    return base / str(step or versions[-1])


def main(options: ServeOptions) -> Path:
    """``make export``: the SavedModel, or with ``FORMAT=tflite`` a .tflite file beside it."""
    run = trained.load(options.run_dir, options.step)
    if options.format == "tflite":
        from serving import tflite

        return tflite.export(run, options)
    return saved_model(run)
