"""The serving module: the dataset's own parse and evaluation preprocess, then the model.

Every signature runs, in one graph, what evaluation runs in tf.data: :meth:`Dataset.parse` on a
batch of records, :meth:`Dataset.preprocess` per example (crop, normalization with the statistics
``make prepare`` wrote, which are constants of the graph), then the model. They return

- ``class_ids`` (int64 [batch]), ``class_names`` (string [batch]: ``dataset_info.json``'s names),
  ``probabilities`` (float32 [batch, classes], softmax of the logits), ``logits`` (float32);
- ``ids`` (int64 [batch]) from ``serving_default`` when the dataset's records carry an ``id``.

Signatures: ``serving_default`` takes serialized tf.Example records (``examples``, string
[batch]); ``image_bytes`` takes encoded JPEG images (``images``, string [batch]) for datasets that
define :meth:`Dataset.from_image_bytes`.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from ingest.dataset import Dataset
from serving.trained import ExportError
from training import evaluation

EXAMPLES = "serving_default"
IMAGES = "image_bytes"
_STRINGS = tf.TensorSpec([None], tf.string)


def records_parser(dataset: Dataset) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Serialized tf.Example records [batch] -> the dataset's parsed batch (its own :meth:`Dataset.parse`)."""
    features = dataset.example_features()
    if features is None and dataset.format != "tfrecord":
        raise ExportError(
            f"dataset {dataset.name!r} stores {dataset.format} records and declares no tf.Example features "
            "(Dataset.example_features), so a serving client would not know what to send; define example_features "
            "for it (clicks does), or serve the model another way"
        )
    if features is None:
        return dataset.parse
    return lambda records: dataset.parse(tf.io.parse_example(records, features))


def preprocessed(dataset: Dataset, parsed: dict[str, tf.Tensor]) -> tf.Tensor:
    """The model input of a parsed batch: :meth:`Dataset.preprocess` of each example, as evaluation runs it."""
    key = dataset.feature_key
    if type(dataset).preprocess is Dataset.preprocess:  # the identity: nothing per example
        return parsed[key]
    # The output's dtype and shape, from preprocess traced on the first example (not run: unused ops are pruned).
    probe = dataset.preprocess({k: v[0] for k, v in parsed.items()})[key]
    return tf.map_fn(
        lambda example: dataset.preprocess(example)[key],
        parsed,
        fn_output_signature=tf.TensorSpec(probe.shape, probe.dtype),
    )


class Served(tf.Module):
    """The SavedModel's root: the model, the class names and one function per signature."""

    def __init__(self, dataset: Dataset, model: keras.Model) -> None:
        super().__init__(name="stoker_served")
        self.model = model
        names = evaluation.class_names(dataset.info.get("label_names"), dataset.num_classes)
        self.class_names = tf.Variable(names, trainable=False, name="class_names")
        parse = records_parser(dataset)

        @tf.function(input_signature=[_STRINGS])
        def examples(examples):
            parsed = parse(examples)
            out = self._outputs(preprocessed(dataset, parsed))
            if "id" in parsed:
                out["ids"] = tf.cast(parsed["id"], tf.int64)
            return out

        self.examples = examples
        self.images = None
        if dataset.serves_image_bytes:

            @tf.function(input_signature=[_STRINGS])
            def images(images):
                return self._outputs(preprocessed(dataset, dataset.from_image_bytes(images)))

            self.images = images

    def signature_functions(self) -> dict[str, tf.types.experimental.GenericFunction]:
        """Signature name -> function, for ``tf.saved_model.save``."""
        return {EXAMPLES: self.examples} | ({IMAGES: self.images} if self.images is not None else {})

    def _outputs(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(self.model(inputs, training=False), tf.float32)
        ids = tf.argmax(logits, -1)
        return {
            "class_ids": ids,
            "class_names": tf.gather(self.class_names, ids),
            "probabilities": tf.nn.softmax(logits),
            "logits": logits,
        }
