"""Evaluation figures on the host: confusion matrix, per-class precision and recall, slices.

``Trainer.evaluate`` runs the compiled eval step on this worker's devices and sums what it
returns on the host; this module turns those sums into the result that goes into
``metrics.json`` (``confusion``, ``per_class``, ``balanced_accuracy``, ``slices``), the
TensorBoard scalars and log lines, and the confusion-matrix image. Everything here is numpy
on the host, this worker only: no TensorFlow op, no collective.

Precision and recall are ``None`` (JSON null), never NaN, where they are undefined: precision
of a class nothing was predicted as, recall of a class with no example in the eval split.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from stoker.config import ConfigError

MAX_SLICE_VALUES = 100  # distinct values of an int or string slice feature before it is an error
FLOAT_BINS = 4  # quantile bins of a float slice feature
_ANNOTATE_UP_TO = 30  # classes: counts are written in the cells of the confusion image up to this


def class_names(names: Sequence[str] | None, num_classes: int) -> list[str]:
    """The dataset's label names (``info["label_names"]``) when they cover every class, else ``"0".."n-1"``."""
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def _ratio(num: int, den: int) -> float | None:
    return float(num) / float(den) if den else None


def class_metrics(confusion: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """``confusion`` (rows true class, columns predicted) -> confusion, per_class, balanced_accuracy.

    ``balanced_accuracy`` is the mean recall over the classes that have examples (None when none has).
    """
    confusion = np.asarray(confusion, np.int64)
    support, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    per_class = [
        {
            "class": i,
            "name": names[i],
            "support": int(support[i]),
            "precision": _ratio(hits[i], predicted[i]),
            "recall": _ratio(hits[i], support[i]),
        }
        for i in range(len(names))
    ]
    recalls = [c["recall"] for c in per_class if c["recall"] is not None]
    return {
        "confusion": confusion.tolist(),
        "per_class": per_class,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
    }


def check_slice_feature(element_spec: Mapping[str, tf.TensorSpec], feature: str) -> None:
    """Raise :class:`ConfigError` unless ``feature`` is a batch key with one int, str, bool or float per example."""
    if feature not in element_spec:
        raise ConfigError(
            f"train.eval_slices={feature!r}: the eval batches have no feature {feature!r}; "
            f"they have {', '.join(sorted(element_spec))}"
        )
    spec = element_spec[feature]
    if spec.shape.rank != 1:
        raise ConfigError(
            f"train.eval_slices={feature!r}: {feature!r} has shape {spec.shape} per batch; slices need one value "
            "per example (a scalar feature such as a categorical column or a source index)"
        )
    if not (spec.dtype.is_integer or spec.dtype.is_floating or spec.dtype in (tf.string, tf.bool)):
        raise ConfigError(
            f"train.eval_slices={feature!r}: {feature!r} is {spec.dtype.name}; use an int, string or float"
        )


class Slices:
    """Per-example slice values, losses and correctness, gathered batch by batch on the host."""

    def __init__(self, feature: str) -> None:
        self.feature = feature
        self._values: list[np.ndarray] = []
        self._losses: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []

    def add(self, values: np.ndarray, losses: np.ndarray, hits: np.ndarray) -> None:
        self._values.append(np.asarray(values))
        self._losses.append(np.asarray(losses, np.float64))
        self._hits.append(np.asarray(hits, bool))

    def result(self) -> dict[str, Any]:
        """``{"feature": name, "values": [{"value", "examples", "accuracy", "loss"}, ...]}`` sorted by value."""
        if not self._values:
            return {"feature": self.feature, "values": []}
        values = np.concatenate(self._values)
        keys, labels = _float_bins(values) if values.dtype.kind == "f" else _distinct(values, self.feature)
        losses, hits = np.concatenate(self._losses), np.concatenate(self._hits)
        out = []
        for k, label in enumerate(labels):
            mask = keys == k
            n = int(mask.sum())
            out.append(
                {
                    "value": label,
                    "examples": n,
                    "accuracy": float(hits[mask].mean()),
                    "loss": float(losses[mask].mean()),
                }
            )
        return {"feature": self.feature, "values": out}


def _distinct(values: np.ndarray, feature: str) -> tuple[np.ndarray, list[Any]]:
    """Index of each example's value among the sorted distinct values, and those values (JSON-ready)."""
    if values.dtype.kind in "OS":  # tf.string arrives as bytes
        values = np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values])
    distinct, keys = np.unique(values, return_inverse=True)
    if len(distinct) > MAX_SLICE_VALUES:
        raise ConfigError(
            f"train.eval_slices={feature!r}: the eval split has {len(distinct)} distinct values of {feature!r} "
            f"(at most {MAX_SLICE_VALUES} are reported); slice by a coarser feature (a category, a bucket, "
            "the source of a mixed dataset)"
        )
    return keys.reshape(-1), [v.item() for v in distinct]


def _float_bins(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Quantile bins of the eval split's values: ``"[lo, hi)"``, the last one ``"[lo, hi]"``; NaN apart."""
    values = values.astype(np.float64)
    finite = ~np.isnan(values)
    edges = np.unique(np.quantile(values[finite], np.linspace(0, 1, FLOAT_BINS + 1))) if finite.any() else []
    if len(edges) == 1:  # one value only: one bin holding it
        edges = np.array([edges[0], edges[0]])
    keys = np.searchsorted(edges[1:-1], values, side="right") if len(edges) else np.zeros(len(values), int)
    labels = [
        f"[{lo:.6g}, {hi:.6g}{']' if i == len(edges) - 2 else ')'}"
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
    ]
    if not finite.all():
        keys = np.where(finite, keys, len(labels))
        labels.append("nan")
    present = np.unique(keys)  # bins no example fell into are left out (duplicate edges made none)
    return np.searchsorted(present, keys), [labels[k] for k in present]


def scalars(result: Mapping[str, Any]) -> dict[str, float]:
    """TensorBoard scalars of one eval result (undefined precision or recall left out)."""
    out = {"eval/loss": result["loss"], "eval/accuracy": result["accuracy"]}
    if result.get("balanced_accuracy") is not None:
        out["eval/balanced_accuracy"] = result["balanced_accuracy"]
    for c in result.get("per_class", []):
        for key in ("recall", "precision"):
            if c[key] is not None:
                out[f"eval/{key}/{c['name']}"] = c[key]
    slices = result.get("slices")
    for s in slices["values"] if slices else []:
        out[f"eval/slice/{slices['feature']}={s['value']}/accuracy"] = s["accuracy"]
    return out


def recall_line(result: Mapping[str, Any]) -> str:
    """``recall: circle 0.98  square 0.95 ...`` (``-`` for a class with no examples)."""
    parts = [f"{c['name']} {'-' if c['recall'] is None else format(c['recall'], '.2f')}" for c in result["per_class"]]
    return "recall: " + "  ".join(parts)


def slice_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per slice: ``slice ad=7: 40 examples  accuracy 0.850  loss 0.3120``."""
    s = result.get("slices")
    if not s:
        return []
    head = f"slice {s['feature']}="
    return [
        f"{head}{v['value']}: {v['examples']} examples  accuracy {v['accuracy']:.3f}  loss {v['loss']:.4f}"
        for v in s["values"]
    ]


def confusion_png(confusion: np.ndarray, names: Sequence[str]) -> bytes:
    """The confusion matrix as a PNG: cells shaded by row share (recall), counts written in them.

    Rendered with matplotlib's Agg canvas directly (no pyplot, no global backend switch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # only evaluations that draw load it
    from matplotlib.figure import Figure

    confusion = np.asarray(confusion, np.int64)
    n = len(names)
    rows = confusion.sum(1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    side = min(12.0, 2.5 + 0.6 * n)
    fig = Figure(figsize=(side + 1.0, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title="confusion matrix")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    if n <= _ANNOTATE_UP_TO:
        for i in range(n):
            for j in range(n):
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=color, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
