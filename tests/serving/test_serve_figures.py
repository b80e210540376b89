"""README.md's serve-figures block is rendered from ``benchmarks/results/serving.json`` alone."""

from __future__ import annotations

import json

from benchmarks import readme
from tests.benchmarks.test_benchmarks import _copy_readmes_and_results


def test_a_changed_serving_figure_makes_the_block_stale(tmp_path):
    _copy_readmes_and_results(tmp_path)  # and checks the committed block matches its file
    path = tmp_path / "benchmarks/results/serving.json"
    result = json.loads(path.read_text())
    result["tflite"]["rows"]["int8"]["bytes"] += 4096
    path.write_text(json.dumps(result))
    assert "README.md: serve-figures" in readme.render_all(tmp_path, check=True)
