"""The built-in datasets pass the public contract test (as a plug-in's would)."""

import pytest

from ingest.datasets.clicks import Clicks
from ingest.datasets.shapes import Shapes
from ingest.datasets.synthetic import Synthetic
from ingest.testing import DatasetContract


class TestShapes(DatasetContract):
    dataset_class = Shapes
    split_sizes = {"train": 256, "validation": 64}

    @pytest.fixture(scope="class")
    def data_dir(self, shapes_dir):
        return shapes_dir


class TestClicks(DatasetContract):
    dataset_class = Clicks
    split_sizes = {"train": 1000, "validation": 200}

    @pytest.fixture(scope="class")
    def data_dir(self, clicks_dir):
        return clicks_dir


class TestSynthetic(DatasetContract):
    dataset_class = Synthetic
    split_sizes = {"train": 96, "validation": 32}
    options = {"train_examples": 96, "eval_examples": 32, "image_size": 16}

    @pytest.fixture(scope="class")
    def data_dir(self, tmp_path_factory):
        return str(tmp_path_factory.mktemp("synthetic"))
