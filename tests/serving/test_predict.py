"""``make predict``: Beam RunInference (DirectRunner) over the export, one prediction per input, atomically.

Counted by the records' own ids (value = f(index) data: a missing or doubled example is named), and
held against the SavedModel loaded in this process on the same records.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from ingest import datasets
from ingest.sources import tfrecord
from serving import export, options, predict, records, signatures, trained
from serving.trained import ExportError
from stoker.errors import DataError


def predictions(out) -> list[dict]:
    return [
        json.loads(line) for path in sorted(out.glob("predictions-*.jsonl")) for line in path.read_text().splitlines()
    ]


def run_predict(run_dir, source, out, *sets):
    opts = options.from_args(
        [f"RUN={run_dir.name}", f"SOURCE={source}", f"OUTPUT={out}"], [f"serve.runs_dir={run_dir.parent}", *sets]
    )
    return predict.main(opts)


def exported(run_dir):
    """The run's newest export (exported here when it has none yet), loaded."""
    try:
        path = export.latest(run_dir)
    except ExportError:
        path = export.main(options.from_args([f"RUN={run_dir.name}"], [f"serve.runs_dir={run_dir.parent}"]))
    return tf.saved_model.load(str(path))


@pytest.mark.parametrize("which", ["shapes", "clicks"])
def test_predict_writes_one_prediction_per_example_matching_the_savedmodel(which, shapes_runs, clicks_run, tmp_path):
    run_dir = shapes_runs["mirrored"] if which == "shapes" else clicks_run
    model = exported(run_dir)
    dataset = datasets.get(trained.read_config(run_dir).data)
    source = str(dataset.root / "validation-*")
    summary = run_predict(run_dir, source, tmp_path / "out")
    lines = predictions(tmp_path / "out")
    seen = Counter(line["id"] for line in lines)
    n = dataset.num_examples("validation")
    assert sorted(seen) == list(range(n))  # each validation example's id, 0..n-1
    assert set(seen.values()) == {1}, [i for i, c in seen.items() if c > 1]
    assert summary["predictions"] == n and summary["skipped"] == 0 and sum(summary["per_class"].values()) == n
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["predictions"] == n
    assert len(list((tmp_path / "out").glob("predictions-*-of-00002.jsonl"))) == 2
    # The SavedModel in this process, on the same records: the same class and probabilities.
    raw = {f"{p}:{i}": r for p in dataset.files("validation") for i, r in enumerate(records.file_records(dataset, p))}
    keys = sorted(raw)
    got = model.signatures[signatures.EXAMPLES](examples=tf.constant([raw[k] for k in keys]))
    by_key = {line["key"]: line for line in lines}
    assert [by_key[k]["class_id"] for k in keys] == got["class_ids"].numpy().tolist()
    np.testing.assert_allclose([by_key[k]["probabilities"] for k in keys], got["probabilities"].numpy(), atol=1e-6)


def test_predict_over_a_folder_of_jpeg_files(shapes_runs, tmp_path):
    """Raw JPEG files (no TFRecord): keyed by file name, the class the image_bytes signature gives."""
    run_dir = shapes_runs["mirrored"]
    model = exported(run_dir)
    dataset = datasets.get(trained.read_config(run_dir).data)
    folder = tmp_path / "jpegs"
    folder.mkdir()
    jpegs = {}
    for record in list(records.file_records(dataset, dataset.files("validation")[0]))[:10]:
        example = tf.train.Example.FromString(record)
        name = folder / f"img{example.features.feature['id'].int64_list.value[0]:03d}.jpg"
        name.write_bytes(example.features.feature["image"].bytes_list.value[0])
        jpegs[str(name)] = name.read_bytes()
    run_predict(run_dir, str(folder), tmp_path / "out")
    lines = {line["key"]: line for line in predictions(tmp_path / "out")}
    assert sorted(lines) == sorted(jpegs)
    keys = sorted(jpegs)
    want = model.signatures[signatures.IMAGES](images=tf.constant([jpegs[k] for k in keys]))["class_ids"].numpy()
    assert [lines[k]["class_id"] for k in keys] == want.tolist()


def _with_bad_record(dataset, tmp_path):
    """The first validation shard with record 3 replaced by bytes that are no tf.Example."""
    good = list(records.file_records(dataset, dataset.files("validation")[0]))
    path = tmp_path / "mixed.tfrecord"
    tfrecord.write(path, good[:3] + [b"\x01not an example"] + good[4:])
    return path, len(good)


def test_a_record_that_does_not_parse_is_named_and_nothing_is_written(shapes_runs, tmp_path):
    run_dir = shapes_runs["mirrored"]
    exported(run_dir)
    dataset = datasets.get(trained.read_config(run_dir).data)
    path, _ = _with_bad_record(dataset, tmp_path)
    with pytest.raises(DataError, match=rf"1 records of SOURCE=.*{path} record 3: .*serve.skip_bad=true"):
        run_predict(run_dir, str(path), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_skip_bad_counts_the_record_and_predicts_the_others(shapes_runs, tmp_path):
    run_dir = shapes_runs["mirrored"]
    exported(run_dir)
    dataset = datasets.get(trained.read_config(run_dir).data)
    path, n = _with_bad_record(dataset, tmp_path)
    summary = run_predict(run_dir, str(path), tmp_path / "out", "serve.skip_bad=true")
    assert summary["skipped"] == 1 and summary["skipped_records"][0]["record"] == 3
    assert sorted(line["record"] for line in predictions(tmp_path / "out")) == [i for i in range(n) if i != 3]


def test_a_file_that_is_not_tfrecord_is_named(shapes_runs, tmp_path):
    run_dir = shapes_runs["mirrored"]
    exported(run_dir)
    path = tmp_path / "notes.tfrecord"
    path.write_text("these are not records at all, just text long enough to hold a record header")
    with pytest.raises(DataError, match=rf"{path} record 0: "):
        run_predict(run_dir, str(path), tmp_path / "out")


def test_a_run_never_exported_says_to_export(shapes_runs, tmp_path):
    with pytest.raises(ExportError, match=r"export holds no export .*make export RUN=nothing"):
        export.latest(tmp_path / "nothing")
