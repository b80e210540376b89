"""A third-party dataset for stoker, installed with `pip install -e examples/plugin`."""

from setuptools import setup

setup(
    name="stoker-rings",
    version="0.1.0",
    packages=["stoker_rings"],
    # The one line that makes `make train DATASET=rings` work: the stoker.datasets entry point.
    entry_points={"stoker.datasets": ["rings = stoker_rings:Rings"]},
)
