"""``make predict RUN=<run> SOURCE=<files>``: batch inference with Beam's RunInference over the export.

The job (host, any Beam runner; DirectRunner here, ``RUNNER=``/``BEAM_ARGS=`` as ``make prepare``):

1. one element per SOURCE file; each file is read with the run's dataset's own reader
   (``Dataset.read``: TFRecord, Parquet, ...) into serialized tf.Example records
   (``serving.records``), or, for a folder of ``.jpg``/``.jpeg`` files, each file's bytes;
2. every block of records is run through the dataset's parse and preprocess alone (no model)
   first: a record that fails is named (file, record index, TensorFlow's reason) and the job
   fails, or with ``SET=serve.skip_bad=true`` it is left out and counted;
3. ``RunInference`` with Beam's TensorFlow model handler (``TFModelHandlerTensor``) on the
   export's ``serving_default`` (records) or ``image_bytes`` (images) signature, keyed by the
   input's name (``file:index`` or the image's path);
4. one JSON line per prediction (``key``, ``file``, ``record``, ``id`` when the records carry one,
   ``class_id``, ``class_name``, ``probabilities``) in ``OUTPUT``'s sharded
   ``predictions-SSSSS-of-NNNNN.jsonl`` files, and ``summary.json`` (counts, per class, skipped).

Everything is written into ``<OUTPUT>.partial/`` and renamed to ``OUTPUT`` when the job and the
summary are complete: an interrupted or failed job leaves no output a reader would trust.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference import base as inference
from apache_beam.ml.inference import tensorflow_inference, utils
from apache_beam.options.pipeline_options import PipelineOptions

from ingest.dataset import Dataset
from serving import export, records, signatures, trained
from serving.options import ServeOptions
from stoker import cli, files
from stoker.errors import DataError

log = logging.getLogger("stoker")
BAD = "bad"  # tagged output of the read step: records that do not parse
IMAGE_SUFFIXES = (".jpg", ".jpeg")
_CHECK_BLOCK = 256  # records parsed together by the check before inference
_NAMED = 5  # bad records named in the error (every one is in the job's output when skipped)


class SavedModelHandler(tensorflow_inference.TFModelHandlerTensor):
    """Beam's TensorFlow model handler, loading with ``tf.saved_model.load``.

    Its own loader goes through ``tf.keras.models.load_model``, which refuses a SavedModel written
    by ``tf.saved_model.save`` (no Keras metadata); the export must be one, because its signatures
    run the dataset's parse, which is not a Keras layer. Batching, metrics and the call are Beam's."""

    def load_model(self) -> tf.Module:
        return tf.saved_model.load(self._model_uri)


def run_signature(
    model: tf.Module, batch: list[tf.Tensor], inference_args: dict[str, Any], model_id: str | None = None, *, name: str
) -> list[inference.PredictionResult]:
    """Worker: one RunInference batch through signature ``name`` (Beam's ``inference_fn``)."""
    out = model.signatures[name](tf.stack(batch))
    return utils._convert_to_result(batch, {k: v.numpy() for k, v in out.items()}, model_id)


class _ReadRecords(beam.DoFn):
    """Worker: one SOURCE file -> (key, record) for each record that parses; the others tagged ``bad``."""

    def __init__(self, dataset: Dataset, images: bool) -> None:
        self.dataset, self.images = dataset, images
        self.check = None

    def setup(self) -> None:
        parse = signatures.records_parser(self.dataset)
        if self.images:
            parse = self.dataset.from_image_bytes

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def check(batch):
            return signatures.preprocessed(self.dataset, parse(batch))

        self.check = check

    def process(self, path: str) -> Iterator[Any]:
        if self.images:
            with open(path, "rb") as f:
                yield from self._checked(path, [(0, f.read())])
            return
        block: list[tuple[int, bytes]] = []
        index = -1
        try:
            for index, record in enumerate(records.file_records(self.dataset, path)):
                block.append((index, record))
                if len(block) == _CHECK_BLOCK:
                    yield from self._checked(path, block)
                    block = []
        except (tf.errors.OpError, OSError, ValueError) as err:  # the file's framing or format itself
            yield from self._checked(path, block)
            reason = f"cannot be read after record {index} ({_first_line(err)})" if index >= 0 else _first_line(err)
            yield beam.pvalue.TaggedOutput(BAD, {"file": path, "record": index + 1, "reason": reason})
            return
        yield from self._checked(path, block)

    def _checked(self, path: str, block: list[tuple[int, bytes]]) -> Iterator[Any]:
        if not block:
            return
        try:
            self.check(tf.constant([r for _, r in block]))
            good = block
        except tf.errors.InvalidArgumentError:  # find which ones, one at a time
            good = []
            for index, record in block:
                try:
                    self.check(tf.constant([record]))
                    good.append((index, record))
                except tf.errors.InvalidArgumentError as err:
                    yield beam.pvalue.TaggedOutput(BAD, {"file": path, "record": index, "reason": _first_line(err)})
        for index, record in good:
            key = path if self.images else f"{path}:{index}"
            yield key, tf.constant(record)


def _first_line(err: Exception) -> str:
    text = getattr(err, "message", None) or str(err)
    return text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__


def _line(keyed: tuple[str, inference.PredictionResult], images: bool) -> str:
    """Worker: one prediction as a JSON line."""
    key, result = keyed
    out = result.inference
    file, _, record = (key, "", "") if images else key.rpartition(":")
    line: dict[str, Any] = {"key": key, "file": file}
    if not images:
        line["record"] = int(record)
    if "ids" in out:
        line["id"] = int(out["ids"])
    line.update(
        class_id=int(out["class_ids"]),
        class_name=out["class_names"].decode(),
        probabilities=[round(float(p), 7) for p in np.asarray(out["probabilities"])],
    )
    return json.dumps(line)


def source_files(source: str, dataset: Dataset) -> tuple[list[str], bool]:
    """(SOURCE's files, whether they are images): a glob, a file, or a folder (its images, else its files)."""
    if not source:
        raise DataError(
            "make predict needs SOURCE=<files>: a TFRecord/Parquet file, a quoted glob, or a folder of JPEG images"
        )
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        found = sorted(p for p in glob.glob(os.path.join(path, "**", "*"), recursive=True) if os.path.isfile(p))
    else:
        found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
    if not found:
        raise DataError(f"SOURCE={source!r} matches no files: give an existing file, folder or quoted glob")
    images = all(p.lower().endswith(IMAGE_SUFFIXES) for p in found)
    if images and not dataset.serves_image_bytes:
        raise DataError(
            f"SOURCE={source!r} holds JPEG images but dataset {dataset.name!r} takes no images; give its records"
        )
    return found, images


def _beam_options(runner: str, beam_args: list[str]) -> PipelineOptions:
    """Beam's flags: on DirectRunner, in this process unless told otherwise (worker processes would each
    start TensorFlow and load the model, seconds more than a small job takes)."""
    args = [f"--runner={runner}", *beam_args]
    if runner == "DirectRunner" and not any(a.startswith("--direct_") for a in beam_args):
        args += ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
    return PipelineOptions(args)


def _write_list(items: list[Any], path: str) -> None:
    files.atomic_write(path, json.dumps(items))


def main(options: ServeOptions, *, runner: str = "DirectRunner", beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run the job; returns the summary written to ``OUTPUT/summary.json``."""
    run_dir = options.run_dir
    model_dir = export.latest(run_dir, options.step)
    config = trained.read_config(run_dir)
    dataset = trained.dataset_of(config, run_dir)
    paths, images = source_files(options.source, dataset)
    if images and signatures.IMAGES not in tf.saved_model.load(str(model_dir)).signatures:
        raise DataError(f"{model_dir} has no {signatures.IMAGES} signature: export the run again (`make export`)")
    out = Path(options.output) if options.output else run_dir / "predictions"
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    handler = inference.KeyedModelHandler(
        SavedModelHandler(
            str(model_dir),
            inference_fn=functools.partial(run_signature, name=signatures.IMAGES if images else signatures.EXAMPLES),
            min_batch_size=options.batch_size,  # fixed blocks (the last one smaller), not Beam's batch-size search
            max_batch_size=options.batch_size,
        )
    )
    start = time.perf_counter()
    try:
        with (
            cli.stderr_to(partial.with_name(out.name + ".predict.log")),
            beam.Pipeline(options=_beam_options(runner, beam_args or [])) as p,
        ):
            read = (
                p
                | "files" >> beam.Create(paths)
                | "read" >> beam.ParDo(_ReadRecords(dataset, images)).with_outputs(BAD, main="records")
            )
            predicted = read.records | "infer" >> inference.RunInference(handler)
            _ = (
                predicted
                | "lines" >> beam.Map(_line, images)
                | "write"
                >> beam.io.WriteToText(
                    str(partial / "predictions"),
                    file_name_suffix=".jsonl",
                    num_shards=options.shards,
                    shard_name_template="-SSSSS-of-NNNNN",
                )
            )
            classes = predicted | "class" >> beam.Map(lambda kv: kv[1].inference["class_names"].decode())
            counts = classes | "per class" >> beam.combiners.Count.PerElement() | "counts" >> beam.combiners.ToList()
            _ = counts | "write counts" >> beam.Map(_write_list, str(partial / ".counts.json"))
            bad = read[BAD] | "bad list" >> beam.combiners.ToList()
            _ = bad | "write bad" >> beam.Map(_write_list, str(partial / ".bad.json"))
    except Exception:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _finish(options, dataset, model_dir, paths, partial, out, time.perf_counter() - start)


def _finish(options, dataset, model_dir, paths, partial: Path, out: Path, seconds: float) -> dict[str, Any]:
    """The summary, checked for bad records (an error unless skipped), then the folder renamed into place."""
    bad = sorted(json.loads((partial / ".bad.json").read_text()), key=lambda b: (b["file"], b["record"]))
    counts = dict(sorted(json.loads((partial / ".counts.json").read_text())))
    if bad and not options.skip_bad:
        shutil.rmtree(partial, ignore_errors=True)
        named = "; ".join(f"{b['file']} record {b['record']}: {b['reason']}" for b in bad[:_NAMED])
        more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
        raise DataError(
            f"{len(bad)} records of SOURCE={options.source} do not parse with dataset {dataset.name!r}'s spec: "
            f"{named}{more}; fix them, or skip them with SET=serve.skip_bad=true (counted in summary.json)"
        )
    for name in (".bad.json", ".counts.json"):
        (partial / name).unlink()
    summary = {
        "run": options.run,
        "model": str(model_dir),
        "dataset": dataset.name,
        "source": options.source,
        "source_files": len(paths),
        "predictions": sum(counts.values()),
        "per_class": counts,
        "skipped": len(bad),
        "skipped_records": bad,
        "shards": sorted(p.name for p in partial.glob("predictions-*.jsonl")),
        "seconds": round(seconds, 3),
    }
    files.atomic_write(partial / "summary.json", json.dumps(summary, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
    summary["output"] = str(out)
    log.info("predicted %d examples of %d files in %.1f s", summary["predictions"], len(paths), seconds)
    return summary
