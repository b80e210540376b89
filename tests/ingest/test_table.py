"""``DATASET=table``: a CSV (and Parquet) of numbers, text and missing values with a text label.

Real Beam (one in-memory worker), real TensorFlow. The statistics are checked against values
computed here with pyarrow's own CSV reader over the rows the shards say went to train (each
example's ``id`` is file number << 32 | line), and training goes through ``python -m training``.

The data: ``score = (income - 50) / 15 + city bonus``; ``segment`` is bronze / silver / gold by
thresholds of it, so a small MLP learns it from the standardized income and the city one-hot.
Every row is a function of its index (numpy seeded per file), and the last ``TWINS`` rows of
each file are copies of its first row, so some copies land in train and some in validation.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from ingest import datasets
from ingest.datasets.table import Table
from ingest.options import DataOptions, PipelineOptions
from ingest.pipeline import build
from ingest.testing import DatasetContract
from stoker.errors import DataError
from tests.training import runs

CITIES = ("paris", "lyon", "nice", "lille", "nantes", "brest", "metz", "pau")
ROWS, TWINS = 1500, 30  # rows per file; copies of the first row at each file's end
ONE_WORKER = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def people(n: int, seed: int) -> dict[str, list]:
    """Columns of ``n`` rows: age (int), income (float, 10% missing), city (text, 5% missing), segment."""
    rng = np.random.default_rng(seed)
    city = np.asarray(CITIES)[rng.choice(len(CITIES), n, p=[0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])]
    income = rng.normal(50, 15, n).round(2)
    age = rng.integers(18, 80, n)
    score = (income - 50) / 15 + np.where(np.isin(city, ["paris", "nice"]), 1.0, -0.5)
    segment = np.where(score > 0.7, "gold", np.where(score > -0.5, "silver", "bronze"))
    income_text = np.where(rng.random(n) < 0.1, "", income.astype(str))
    city_text = np.where(rng.random(n) < 0.05, "", city)
    cols = {
        "age": age.tolist(),
        "income": income_text.tolist(),
        "city": city_text.tolist(),
        "segment": segment.tolist(),
    }
    for values in cols.values():  # the twins: the first row again at the end
        values[-TWINS:] = [values[0]] * TWINS
    return cols


def write_csv(path: Path, cols: dict[str, list], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header or list(cols))
        out.writerows(zip(*cols.values(), strict=True))
    return path


def write_parquet(path: Path, cols: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {
        "age": pa.array(cols["age"], pa.int64()),
        "income": pa.array([float(v) if v else None for v in cols["income"]], pa.float64()),
        "city": pa.array([v or None for v in cols["city"]], pa.string()),
        "segment": pa.array(cols["segment"], pa.string()),
    }
    pq.write_table(pa.table(table), path)
    return path


def prepare(source: str, data_dir: Path, **options) -> Table:
    ds = datasets.get(DataOptions(name="table", source=source, data_dir=str(data_dir), **options))
    ds.prepare(beam_args=ONE_WORKER)
    return ds


@pytest.fixture(scope="module")
def csv_source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("people-src") / "people"
    for k in range(2):
        write_csv(folder / f"part-{k}.csv", people(ROWS, seed=k))
    return folder


@pytest.fixture(scope="module")
def csv_table(csv_source, tmp_path_factory) -> Table:
    return prepare(f"{csv_source}/*.csv", tmp_path_factory.mktemp("data"), label="segment")


def _stored(ds: Table, split: str) -> dict[str, np.ndarray]:
    parts = [pq.read_table(p).to_pydict() for p in ds.files(split)]
    return {k: np.concatenate([np.asarray(t[k]) for t in parts]) for k in parts[0]}


def _train_rows(ds: Table, sources: list[str], first_row: int) -> dict[str, list]:
    """The source rows the train shards hold (read with pyarrow's reader, not stoker's)."""
    ids = _stored(ds, "train")["id"]
    wanted = {(int(i) >> 32, int(i) & 0xFFFFFFFF) for i in ids}
    out: dict[str, list] = {}
    for index, path in enumerate(sources):
        if path.endswith(".csv"):
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)).to_pydict()
        else:
            table = pq.read_table(path).to_pydict()
        for r in range(len(table["age"])):
            if (index, r + first_row) in wanted:
                for k, v in table.items():
                    out.setdefault(k, []).append(v[r])
    assert len(out["age"]) == len(ids), "a train id names no source row"
    return out


def _check_statistics(ds: Table, first_row: int) -> None:
    """Mean, std, missing counts, vocabulary and label names against a direct computation."""
    info, sources = ds.info, ds.source_files()
    rows = _train_rows(ds, sources, first_row)
    income = np.asarray([np.nan if v is None else v for v in rows["income"]], np.float64)
    cols = info["columns"]
    assert cols["income"]["mean"] == pytest.approx(np.nanmean(income), rel=1e-9)
    assert cols["income"]["std"] == pytest.approx(np.nanstd(income), rel=1e-9)
    assert cols["age"]["mean"] == pytest.approx(np.mean(rows["age"]), rel=1e-9)
    assert cols["income"]["missing"]["train"] == int(np.isnan(income).sum()) > 0
    assert cols["city"]["missing"]["train"] == sum(v is None for v in rows["city"]) > 0
    counts = {c: sum(v == c for v in rows["city"]) for c in CITIES}
    assert cols["city"]["vocab"] == sorted(CITIES, key=lambda c: (-counts[c], c))
    assert info["label_names"] == ["bronze", "gold", "silver"]
    assert (cols["income"]["missing_indicator"], cols["age"]["missing_indicator"]) == (True, False)
    # The stored columns are those statistics applied: x1 standardized income, x2 its indicator.
    stored = _stored(ds, "train")
    assert info["features"]["numeric"] == {
        "x0": "age (standardized)",
        "x1": "income (standardized)",
        "x2": "income is missing",
    }
    expected = np.where(np.isnan(income), 0.0, (income - np.nanmean(income)) / np.nanstd(income))
    order = np.argsort(stored["id"], kind="stable")  # _train_rows is in (file, line) order, as sorted ids
    np.testing.assert_allclose(stored["x1"][order], expected, atol=1e-5)
    np.testing.assert_array_equal(stored["x2"][order], np.isnan(income).astype(np.float32))
    ids = {c: i + 2 for i, c in enumerate(cols["city"]["vocab"])}
    np.testing.assert_array_equal(stored["c0"][order], [0 if v is None else ids[v] for v in rows["city"]])
    names = info["label_names"]
    np.testing.assert_array_equal(stored["label"][order], [names.index(v) for v in rows["segment"]])


def test_statistics_vocabulary_and_missing_values_match_a_direct_computation(csv_table):
    _check_statistics(csv_table, first_row=2)  # CSV rows are numbered by line: the header is line 1


def test_every_source_row_lands_in_exactly_one_split(csv_table):
    ids = np.concatenate([_stored(csv_table, s)["id"] for s in ("train", "validation")])
    expected = {(f << 32) | line for f in range(2) for line in range(2, ROWS + 2)}
    assert sorted(ids.tolist()) == sorted(expected)
    held = csv_table.num_examples("validation") / (2 * ROWS)
    assert 0.07 < held < 0.13, held  # validation_fraction=0.1, by a hash per row
    info = csv_table.info
    assert info["splits"]["train"]["num_examples"] == sum(s["num_examples"] for s in info["splits"]["train"]["shards"])


def test_train_and_evaluation_pipelines_give_a_row_the_same_features(csv_table):
    """The copies of one row: read for training (train split, shuffled, training=True) and for
    evaluation (validation split) they must be the same feature vector."""
    twin_ids = {(f << 32) | line for f in range(2) for line in [2, *range(ROWS + 2 - TWINS, ROWS + 2)]}
    seen = {}
    for split, training in (("train", True), ("validation", False)):
        built = build(csv_table, split, PipelineOptions(), batch_size=64, training=training, seed=1, shuffle_buffer=256)
        steps = -(-csv_table.num_examples(split) // 64)
        for batch in built.dataset.take(steps):
            for i, x in zip(batch["id"].numpy(), batch["features"].numpy(), strict=True):
                if int(i) in twin_ids and (int(i), split) not in seen:
                    seen[(int(i), split)] = x
    for f in range(2):  # each file's twins are copies of its own first row
        mine = {(i, s): x for (i, s), x in seen.items() if i >> 32 == f}
        assert {s for _, s in mine} == {"train", "validation"}, f"file {f}: twins should fall in both splits"
        vectors = list(mine.values())
        for x in vectors[1:]:
            np.testing.assert_array_equal(x, vectors[0])
    assert vectors[0].shape == (csv_table.info["feature_width"],) == (3 + len(CITIES) + 2,)


def test_a_prepared_table_is_reused_and_prepared_again_when_source_changes(csv_source, csv_table):
    assert csv_table.stale() == ""
    again = datasets.get(DataOptions(name="people", data_dir=csv_table.options.data_dir))
    assert isinstance(again, Table) and again.info["label"] == "segment" and again.stale() == ""
    other_label = datasets.get(dataclasses.replace(csv_table.options, label="city"))
    assert "LABEL=city" in other_label.stale()
    extra = write_csv(csv_source / "part-9.csv", people(40, seed=9))
    try:
        assert "changed" in csv_table.stale()
    finally:
        extra.unlink()
    assert csv_table.stale() == ""


@pytest.fixture(scope="module")
def parquet_source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("people-pq") / "people_pq"
    for k in range(2):
        write_parquet(folder / f"part-{k}.parquet", people(ROWS, seed=10 + k))
    return folder


def test_parquet_source_statistics(parquet_source, tmp_path):
    ds = prepare(str(parquet_source), tmp_path, label="segment")  # a folder: its *.csv and *.parquet files
    assert ds.name == "people_pq" and ds.info["columns"]["income"]["type"] == "float"
    _check_statistics(ds, first_row=0)  # Parquet rows are numbered from 0


@pytest.mark.timeout(300)
def test_csv_and_parquet_train_through_python_m_training_well_above_the_majority_class(
    csv_source, parquet_source, tmp_path
):
    """``make train DATASET=table SOURCE='...' LABEL=segment``: prepared on first use (the default
    DirectRunner), then trained; validation accuracy well above always answering the majority class."""
    data_dir = tmp_path / "data"
    common = [f"DATA_DIR={data_dir}", "LABEL=segment", "EPOCHS=6", "BATCH=64", "STRATEGY=one_device"]
    metrics = runs.train_all(
        tmp_path / "runs",
        {
            "csv": ["DATASET=table", f"SOURCE={csv_source}/*.csv", *common],
            "parquet": ["DATASET=table", f"SOURCE={parquet_source}/*.parquet", *common],
        },
        ["train.eval_every_epoch=false", "train.checkpoint_every=0"],
        timeout=280,
    )
    for run, name in (("csv", "people"), ("parquet", "people_pq")):
        info = json.loads((data_dir / name / "dataset_info.json").read_text())
        assert info["kind"] == "table"
        labels = _stored(Table(DataOptions(name=name, data_dir=str(data_dir))), "validation")["label"]
        majority = np.bincount(labels).max() / labels.size
        accuracy = metrics[run]["eval"]["accuracy"]
        assert accuracy > majority + 0.25, (run, accuracy, majority)


# ---- bad input: one clear line, nothing half-written -----------------------------------------
def _error(source: str, data_dir: Path, **options) -> str:
    with pytest.raises(DataError) as err:
        prepare(source, data_dir, **options)
    message = str(err.value)
    assert "\n" not in message, message
    assert not list(data_dir.glob("*.partial")), "a failed prepare left its partial folder"
    return message


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(DataError, match="DATASET=table needs SOURCE="):
        datasets.get(DataOptions(name="table", data_dir=str(tmp_path)))
    assert "does not exist" in _error(str(tmp_path / "nowhere"), tmp_path, label="y")
    (tmp_path / "empty").mkdir()
    assert "matches no files" in _error(str(tmp_path / "empty"), tmp_path, label="y")
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "a.csv").write_text("")
    assert "a.csv is empty (no header row)" in _error(str(tmp_path / "zero"), tmp_path, label="y")
    write_csv(tmp_path / "header" / "h.csv", {"x": [], "y": []})
    assert "no training rows" in _error(str(tmp_path / "header"), tmp_path, label="y")


def test_label_not_given_or_not_a_column(csv_source, tmp_path):
    assert "needs LABEL=" in _error(f"{csv_source}/*.csv", tmp_path)
    message = _error(f"{csv_source}/*.csv", tmp_path, label="segmnet")
    assert "LABEL='segmnet' is not a column" in message and "closest: segment" in message


def test_one_class_only(tmp_path):
    write_csv(tmp_path / "one" / "a.csv", {"x": list(range(20)), "y": ["yes"] * 20})
    assert "one class only ('yes'" in _error(str(tmp_path / "one"), tmp_path, label="y")


def test_a_column_whose_type_changes_between_files(tmp_path):
    write_csv(tmp_path / "mixed" / "a.csv", {"x": list(range(20)), "y": [i % 2 for i in range(20)]})
    write_csv(tmp_path / "mixed" / "b.csv", {"x": ["n/a?"] + list(range(19)), "y": [i % 2 for i in range(20)]})
    message = _error(str(tmp_path / "mixed"), tmp_path, label="y")
    assert "column 'x' changes type between files: numbers in " in message
    assert "a.csv but text ('n/a?' at " in message and "b.csv:2) in " in message
    (tmp_path / "mixed" / "b.csv").rename(tmp_path / "mixed" / "0.csv")  # the text file read first
    message = _error(str(tmp_path / "mixed"), tmp_path, label="y")
    assert "a.csv but text ('n/a?' at " in message and "0.csv:2) in " in message


def test_a_row_with_the_wrong_number_of_fields(tmp_path):
    path = write_csv(tmp_path / "bad" / "a.csv", {"x": list(range(30)), "y": [i % 2 for i in range(30)]})
    lines = path.read_text().splitlines()
    lines[7] += ",extra"  # line 8 of the file
    path.write_text("\n".join(lines) + "\n")
    message = _error(str(path), tmp_path, label="y")
    assert f"{path}:8: 3 fields, the header has 2" in message and "skip_bad_files=true" in message
    assert not (tmp_path / "bad").joinpath("dataset_info.json").exists() and not (tmp_path / "a").exists()
    ds = prepare(str(path), tmp_path, label="y", skip_bad_files=True)
    bad = ds.info["bad_rows"]
    assert bad == {"count": 1, "listed": [f"{path}:8: 3 fields, the header has 2"]}
    assert ds.num_examples("train") + ds.num_examples("validation") == 29


def test_a_failed_prepare_leaves_the_previous_folder_as_it_was(tmp_path):
    path = write_csv(tmp_path / "src" / "t.csv", {"x": list(range(30)), "y": [i % 3 for i in range(30)]})
    ds = prepare(str(path), tmp_path, label="y")
    before = {p.name: p.read_bytes() for p in Path(ds.root).iterdir()}
    assert ds.info["label_kind"] == "int" and ds.info["label_names"] == ["0", "1", "2"]
    write_csv(path, {"x": list(range(30)), "y": [1] * 30})
    os.utime(path)
    _error(str(path), tmp_path, label="y")
    assert {p.name: p.read_bytes() for p in Path(ds.root).iterdir()} == before


def test_feature_vector_spec_matches_a_parsed_batch(csv_table):
    records = next(iter(csv_table.read_batches(tf.constant(csv_table.files("train")[0]), 5)))
    parsed = csv_table.parse(records)
    for key, spec in csv_table.element_spec.items():
        assert parsed[key].shape[1:] == spec.shape and parsed[key].dtype == spec.dtype, key


class TestTableContract(DatasetContract):
    """The plug-in contract on the prepared CSV (reads as clicks does: batched row groups)."""

    dataset_class = Table
    split_sizes = {"train": 2708, "validation": 292}  # 3000 rows; the seeded hash holds out 292

    @pytest.fixture(scope="class")
    def data_dir(self, csv_table) -> str:
        return csv_table.options.data_dir

    @pytest.fixture(scope="class")
    def dataset(self, data_dir) -> Table:
        return datasets.get(DataOptions(name="people", data_dir=data_dir))  # by its prepared name
