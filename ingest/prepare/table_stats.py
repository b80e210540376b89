"""Statistics of a table on its train split, the plan made from them, and the plan applied to rows.

What a table's columns become (the same for train and validation rows: one :func:`transform`):

- numeric column: ``(value - mean) / std`` with mean and std of the train split (std 0 -> 1); a
  missing value becomes the mean (0 after standardizing), and a numeric column with any missing
  value in SOURCE gets a second feature, ``1`` where missing (the model can tell "average" from
  "unknown");
- string column: an id, ``0`` missing, ``1`` out of vocabulary, ``2..`` the ``vocab_size`` most
  frequent train values by count (ties by value);
- the label: integers kept as class ids (>= 0); text mapped to ids in sorted order of the train
  split's values, the names kept as ``label_names``. A row without a label is dropped (counted),
  and so is a validation row whose label the train split never has (counted).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import numpy as np

from ingest.prepare import table_rows
from ingest.prepare.table_rows import MAX_LISTED_BAD, MISSING_ID, OOV_ID, Chunk
from stoker.errors import DataError

SPLITS = ("train", "validation")


def empty() -> dict[str, Any]:
    """The summary of no rows (the start of :func:`merge`)."""
    return {
        "rows": collections.Counter(),
        "missing": {s: collections.Counter() for s in SPLITS},
        "moments": {},
        "counts": collections.defaultdict(collections.Counter),
        "labels": {s: collections.Counter() for s in SPLITS},
        "no_label": collections.Counter(),
        "bad": [],
        "bad_count": 0,
    }


def _label_values(values: Any, kind: str) -> list:
    if kind == "string":
        return table_rows.strings(values)
    out = table_rows.numbers(values)
    return [None if np.isnan(v) else (int(v) if float(v).is_integer() else float(v)) for v in out]


def summarize(chunk: Chunk, kinds: dict[str, str], label: str, fraction: float, seed: int) -> dict[str, Any]:
    """Counts, moments and value counts of one chunk (moments and value counts of train rows only)."""
    out = empty()
    out["bad"], out["bad_count"] = chunk.bad[:MAX_LISTED_BAD], len(chunk.bad)
    held = table_rows.validation_mask(chunk, fraction, seed)
    labels = _label_values(chunk.columns[label], kinds[label])
    for split, rows in (("train", ~held), ("validation", held)):
        out["rows"][split] += int(rows.sum())
        for name, kind in kinds.items():
            if kind == "empty":
                continue
            values = chunk.columns[name]
            if kind == "string":
                texts = [v for v, r in zip(table_rows.strings(values), rows, strict=True) if r]
                out["missing"][split][name] += sum(v is None for v in texts)
                if split == "train" and name != label:
                    out["counts"][name].update(v for v in texts if v is not None)
            else:
                x = table_rows.numbers(values)[rows]
                present = x[~np.isnan(x)]
                out["missing"][split][name] += int(x.size - present.size)
                if split == "train" and name != label and present.size:
                    out["moments"][name] = (
                        present.size,
                        float(present.mean()),
                        float(((present - present.mean()) ** 2).sum()),
                    )
        kept = [v for v, r in zip(labels, rows, strict=True) if r]
        out["no_label"][split] += sum(v is None for v in kept)
        out["labels"][split].update(v for v in kept if v is not None)
    return out


def _moments(a: tuple[int, float, float], b: tuple[int, float, float]) -> tuple[int, float, float]:
    """Chan et al.'s pairwise merge of (count, mean, sum of squared deviations): stable for large counts."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, sa + sb + delta * delta * na * nb / n


def merge(summaries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One summary of many (associative and commutative: Beam combines partial merges again)."""
    out = empty()
    for s in summaries:
        out["rows"].update(s["rows"])
        out["no_label"].update(s["no_label"])
        for split in SPLITS:
            out["missing"][split].update(s["missing"][split])
            out["labels"][split].update(s["labels"][split])
        for name, m in s["moments"].items():
            out["moments"][name] = _moments(out["moments"][name], m) if name in out["moments"] else m
        for name, counts in s["counts"].items():
            out["counts"][name].update(counts)
        out["bad"] = (out["bad"] + s["bad"])[:MAX_LISTED_BAD]
        out["bad_count"] += s["bad_count"]
    return out


def vocabulary(counts: collections.Counter, size: int) -> list[str]:
    """The ``size`` most frequent values, ties broken by value (the same list on every runner)."""
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]


def _label_plan(summary: dict[str, Any], label: str, kind: str) -> dict[str, Any]:
    train = summary["labels"]["train"]
    if not train:
        raise DataError(
            f"SOURCE has no training rows with a LABEL={label!r} value "
            f"({summary['rows']['train']} train rows, {summary['no_label']['train']} without a label); add rows"
        )
    fractional = [v for v in train if isinstance(v, float)]
    if kind == "float" and fractional:
        raise DataError(
            f"LABEL={label!r} holds non-integer numbers (e.g. {fractional[0]}); give a column of class ids "
            "(integers >= 0) or of class names (text)"
        )
    if len(train) < 2:
        only = next(iter(train))
        raise DataError(
            f"LABEL={label!r} has one class only ({only!r} in all {train[only]} training rows): a classifier "
            "needs two or more; choose another LABEL= or add rows of other classes"
        )
    if kind == "string":
        names = sorted(train)
        return {"label": label, "label_kind": "string", "label_names": names}
    if min(train) < 0:
        raise DataError(f"LABEL={label!r} has negative class ids (e.g. {min(train)}); class ids must be >= 0")
    return {"label": label, "label_kind": "int", "label_names": [str(i) for i in range(max(train) + 1)]}


def plan(summary: dict[str, Any], kinds: dict[str, str], label: str, vocab_size: int) -> dict[str, Any]:
    """What every column becomes (module docstring), from the merged train summary."""
    out = _label_plan(summary, label, kinds.get(label, "empty"))  # no kinds: SOURCE has no rows
    any_missing = collections.Counter()
    for split in SPLITS:
        any_missing.update(summary["missing"][split])
    numeric, categorical, dropped = [], [], []
    for name, kind in kinds.items():
        if name == label:
            continue
        if kind == "empty" or (kind != "string" and name not in summary["moments"]):
            dropped.append(name)  # no value in the train split: nothing to learn or standardize with
        elif kind == "string":
            categorical.append({"name": name, "vocab": vocabulary(summary["counts"][name], vocab_size)})
        else:
            n, mean, m2 = summary["moments"][name]
            std = float(np.sqrt(m2 / n))
            numeric.append(
                {"name": name, "mean": mean, "std": std if std > 0 else 1.0, "indicator": any_missing[name] > 0}
            )
    return dict(out, numeric=numeric, categorical=categorical, dropped=dropped)


def layout(p: dict[str, Any]) -> dict[str, Any]:
    """Stored column names (``x<i>`` float32 features, ``c<j>`` int64 ids) and what each is."""
    numeric = []
    for col in p["numeric"]:
        numeric.append((f"x{len(numeric)}", f"{col['name']} (standardized)"))
        if col["indicator"]:
            numeric.append((f"x{len(numeric)}", f"{col['name']} is missing"))
    categorical = [(f"c{j}", col["name"], len(col["vocab"]) + 2) for j, col in enumerate(p["categorical"])]
    return {"numeric": numeric, "categorical": categorical}


def transform(chunk: Chunk, p: dict[str, Any], fraction: float, seed: int) -> dict[str, tuple[dict, int]]:
    """split -> (stored columns of its rows, validation rows dropped for an unseen label)."""
    held = table_rows.validation_mask(chunk, fraction, seed)
    labels = _label_ids(chunk.columns[p["label"]], p)
    columns: dict[str, np.ndarray] = {}
    for col in p["numeric"]:
        x = table_rows.numbers(chunk.columns[col["name"]])
        missing = np.isnan(x)
        columns[f"x{len(columns)}"] = np.where(missing, 0.0, (x - col["mean"]) / col["std"]).astype(np.float32)
        if col["indicator"]:
            columns[f"x{len(columns)}"] = missing.astype(np.float32)
    for j, col in enumerate(p["categorical"]):
        ids = {v: i + 2 for i, v in enumerate(col["vocab"])}
        texts = table_rows.strings(chunk.columns[col["name"]])
        columns[f"c{j}"] = np.asarray([MISSING_ID if v is None else ids.get(v, OOV_ID) for v in texts], np.int64)
    columns["label"] = labels
    columns["id"] = (np.int64(chunk.index) << np.int64(32)) | chunk.rows
    out = {}
    for split, rows in (("train", ~held), ("validation", held)):
        keep = rows & (labels >= 0)
        unseen = int((rows & (labels == -2)).sum())
        out[split] = ({k: v[keep] for k, v in columns.items()}, unseen)
    return out


def _label_ids(values: Any, p: dict[str, Any]) -> np.ndarray:
    """Class ids; -1 where the label is missing, -2 where the train split never had it."""
    if p["label_kind"] == "string":
        ids = {name: i for i, name in enumerate(p["label_names"])}
        return np.asarray([-1 if v is None else ids.get(v, -2) for v in table_rows.strings(values)], np.int64)
    x = table_rows.numbers(values)
    out = np.where(np.isnan(x), -1, np.nan_to_num(x, nan=-1)).astype(np.int64)
    return np.where((out >= len(p["label_names"])) | ((out < 0) & (out != -1)), -2, out)
