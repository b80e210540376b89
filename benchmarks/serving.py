"""``python -m benchmarks.serving [--run RUN]``: what serving a trained run costs on this machine.

Measures, on one trained ``shapes`` run (the default ``make train`` when ``runs/<RUN>`` has none:
trained first with ``python -m training RUN=<RUN>``), and writes ``benchmarks/results/serving.json``:

- TFLite, for each ``QUANTIZE`` (none, dynamic, int8): file size, the interpreter's time per example
  (batch 1, one thread, median over the validation split) and validation accuracy;
- batch inference over the validation split: ``make predict`` (Beam RunInference on DirectRunner) as
  its own process, timed whole and as the job its summary times, beside a plain Python loop calling
  the SavedModel's ``serving_default`` on the same records, 64 at a time (read, infer; nothing
  written), run twice: the median, and the two runs' spread as the A/A noise.

README.md's ``serve-figures`` block is rendered from that file (``python -m benchmarks.readme``).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import machine
from benchmarks.readme import renders

log = logging.getLogger("benchmarks.serving")
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
QUANTIZE = ("none", "dynamic", "int8")
LOOP_BATCH = 64


def ensure_trained(run: str) -> Path:
    run_dir = REPO / "runs" / run
    if not (run_dir / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "training", f"RUN={run}"]
        subprocess.run(cmd, cwd=REPO, check=True, timeout=1800)
    return run_dir


def tflite_rows(run_dir: Path) -> dict[str, Any]:
    from serving import export, options, tflite, trained

    run = trained.load(run_dir)
    rows = {}
    for quantize in QUANTIZE:
        items = [f"RUN={run_dir.name}", "FORMAT=tflite", f"QUANTIZE={quantize}"]
        path = export.main(options.from_args(items, [f"serve.runs_dir={run_dir.parent}"]))
        rows[quantize] = {"bytes": path.stat().st_size, **tflite.evaluate(path, run)}
        log.info("tflite %s: %s", quantize, rows[quantize])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "run": run_dir.name,
        "step": run.step,
        "dataset": run.dataset.name,
        "strategy": run.config.strategy.name,
        "image_size": run.dataset.element_spec[run.dataset.feature_key].shape.as_list(),
        "keras_accuracy": metrics["eval"]["accuracy"],
        "rows": rows,
    }


def batch_inference(run_dir: Path) -> dict[str, Any]:
    """``make predict`` as its own process (what a user runs) beside a Python loop over the SavedModel."""
    import os

    import tensorflow as tf

    from ingest import datasets
    from serving import export, signatures, trained

    model_dir = export.saved_model(trained.load(run_dir))
    dataset = datasets.get(trained.read_config(run_dir).data)
    source = str(dataset.root / "validation-*")
    with tempfile.TemporaryDirectory(prefix="stoker-predict-") as tmp:
        cmd = [sys.executable, "-m", "serving", "predict", f"RUN={run_dir.name}", f"SOURCE={source}"]
        cmd += [f"OUTPUT={tmp}/out", "--set", f"serve.runs_dir={run_dir.parent}"]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, check=True, timeout=900, env=dict(os.environ), capture_output=True)
        process_s = time.perf_counter() - start
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
    start = time.perf_counter()
    fn = tf.saved_model.load(str(model_dir)).signatures[signatures.EXAMPLES]
    load_s = time.perf_counter() - start
    runs = [_python_loop(fn, dataset) for _ in range(2)]  # the second is the A/A repeat
    n, loops = runs[0][0], [seconds for _, seconds in runs]
    loop_s = statistics.median(loops)
    return {
        "examples": summary["predictions"],
        "predict": {
            "command": f"make predict RUN={run_dir.name} SOURCE='{source}'",
            "process_seconds": round(process_s, 2),  # the whole process: Python, TensorFlow and Beam start-up too
            "job_seconds": summary["seconds"],  # the Beam job: model load, read, check, infer, write
        },
        "python_loop": {
            "examples": n,
            "batch": LOOP_BATCH,
            "load_seconds": round(load_s, 2),
            "seconds": round(loop_s, 2),
            "repeats_seconds": [round(s, 3) for s in loops],
            "noise": round(abs(loops[0] - loops[1]) / max(loops), 3),  # A/A: the same loop twice
        },
    }


def _python_loop(fn, dataset) -> tuple[int, float]:
    """Examples and seconds: the validation records read and sent to ``serving_default``, ``LOOP_BATCH`` at a time."""
    import tensorflow as tf

    from serving import records

    start, n, block = time.perf_counter(), 0, []
    for path in dataset.files("validation"):
        for record in records.file_records(dataset, path):
            block.append(record)
            if len(block) == LOOP_BATCH:
                n += len(fn(examples=tf.constant(block))["class_ids"])
                block = []
    n += len(fn(examples=tf.constant(block))["class_ids"]) if block else 0
    return n, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.splitlines()[0])
    p.add_argument("--run", default="serving-bench", help="trained shapes run under runs/ (trained when missing)")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from benchmarks import measure

    run_dir = ensure_trained(args.run)
    info = machine.info()
    before = info.pop("load_average")
    start = time.perf_counter()
    body = {"family": "serving", "command": "python -m benchmarks.serving " + " ".join(argv or sys.argv[1:])}
    body.update(tflite=tflite_rows(run_dir), batch=batch_inference(run_dir))
    info["load_average"] = {"before": before, "after": machine.info()["load_average"]}
    body.update(seconds=round(time.perf_counter() - start, 1), machine=info)
    log.info("wrote %s", measure.write("serving", body, args.results_dir))
    return 0


@renders("README.md", "serve-figures")
def _serve_block(root: Path) -> str:
    from benchmarks.figures import result, source

    r = result(root, "serving")
    t, b = r["tflite"], r["batch"]
    lines = [
        f"Measured ({source(r)}) on run `{t['run']}` (`{t['dataset']}` {'x'.join(map(str, t['image_size']))}, "
        f"`STRATEGY={t['strategy']}`, step {t['step']}; the Keras model's validation accuracy "
        f"{100 * t['keras_accuracy']:.1f}%):",
        "",
        "| `QUANTIZE=` | size | TFLite interpreter, per example (batch 1, 1 thread) | validation accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for name, row in t["rows"].items():
        lines.append(
            f"| `{name}` | {row['bytes'] / 1024:.0f} KiB | {1e6 * row['seconds_per_example']:.0f} µs | "
            f"{100 * row['accuracy']:.1f}% ({row['examples']} examples) |"
        )
    p, loop = b["predict"], b["python_loop"]
    lines += [
        "",
        f"Batch inference over the {b['examples']} validation examples: `make predict` took "
        f"{p['process_seconds']:.1f} s as a process, of which its Beam job (DirectRunner in one process: model load, "
        f"read, parse check, RunInference, sharded write, summary) {p['job_seconds']:.1f} s, "
        f"{b['examples'] / p['job_seconds']:.0f} examples/s; a plain Python loop over the SavedModel on the same "
        f"records ({loop['batch']} at a time, nothing written) {loop['examples'] / loop['seconds']:.0f} examples/s "
        f"({loop['seconds']:.1f} s, after {loop['load_seconds']:.1f} s to load it"
        + (f"; run twice, {100 * loop['noise']:.0f}% apart" if "noise" in loop else "")
        + ").",
    ]
    load, cores = r["machine"]["load_average"], r["machine"]["cores"]
    if max(load["before"][0], load["after"][0]) > cores:
        lines += [
            "",
            f"The machine was shared and loaded while this ran (load average above its {cores} cores): the times are "
            "upper bounds; compare the rows with each other, not with other machines.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
