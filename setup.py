"""stoker: keep accelerators fed. Install with `make setup` (see README.md)."""

from setuptools import find_packages, setup

# Pins that were tried together on this machine: ../shared/stack/tried-with-tfdv-py311.txt (the set
# with TFDV; the set before it, Beam 2.77 / pyarrow 25, is ../shared/stack/tried-together-py311.txt).
# TFDV 1.16.1 (the TF 2.16 line) needs pyarrow<11 and pandas<2; Beam 2.61.0 accepts pyarrow 10.0.1
# (Beam 2.77 needs pyarrow>=14). Unpinned, pip backtracks for many minutes through apache-beam and
# cachetools versions, so the transitive pins that settle it are listed too (from the tried set).
# Horovod and the DALI TensorFlow plugin compile against the installed TensorFlow, so the
# Makefile installs them after this package, with --no-build-isolation (extras document pins).
CORE = [
    "tensorflow==2.16.2",
    "tf-keras==2.16.0",
    "tensorflow-io==0.37.1",
    "tensorboard==2.16.2",
    "tensorboard-plugin-profile==2.16.0",
    "setuptools>=69,<81",  # TensorBoard 2.16 imports pkg_resources, which setuptools 81 removed
    # gcp: TFDV imports Beam's GCP modules (and gs:// needs them); 2.61 has no tfrecord extra (crcmod is a base need)
    "apache-beam[gcp]==2.61.0",
    "google-crc32c==1.9.0",
    "pyarrow==10.0.1",  # TFDV/tfx-bsl 1.16 need pyarrow<11 (no Parquet page checksums: see sources/parquet.py)
    "pandas==1.5.3",  # TFDV 1.16 needs pandas<2
    # The data-validation step (ingest/validate.py) and what stops pip backtracking around it.
    "tensorflow-data-validation==1.16.1",
    "tfx-bsl==1.16.1",
    "tensorflow-serving-api==2.16.1",
    # make predict: Beam's TensorFlow model handler (apache_beam.ml.inference.tensorflow_inference) imports it
    "tensorflow-hub==0.16.1",
    "cachetools==5.5.2",
    "pyfarmhash==0.3.2",
    "joblib==1.5.3",
    "numpy==1.26.4",
    "protobuf==4.25.9",
    "PyYAML==6.0.4",
    "pillow==12.3.0",
    "psutil==7.2.2",
    "matplotlib>=3.8,<4",
    "tqdm>=4.66,<5",
    # DATASET=tfds:NAME reads TFDS-prepared folders. 4.9.7 installs beside TF 2.16 / numpy 1.26 /
    # protobuf 4.25 when these three are pinned (unpinned, pip takes protobuf 7); tensorflow-metadata
    # 1.16.1 is the release TFDV 1.16.1 needs too. etils (TFDS's) imports importlib_resources
    # for builders defined in a package but does not require it on Python 3.11.
    "tensorflow-datasets==4.9.7",
    "tensorflow-metadata==1.16.1",
    "importlib_resources==7.1.0",
]

setup(
    name="stoker",
    version="0.1.0",
    description="High-performance tf.data input pipelines and distributed training",
    python_requires=">=3.11,<3.12",
    # Only `stoker` goes into site-packages: ingest, strategies, training, profiles and benchmarks
    # are imported from the checkout (every make target and entry point puts it on PYTHONPATH),
    # so no top-level `training` or `benchmarks` of stoker's can collide with another project's.
    packages=find_packages(include=["stoker", "stoker.*"]),
    include_package_data=True,
    install_requires=CORE,
    extras_require={
        "dali": ["nvidia-dali-cuda120==2.4.0"],
        "dali-tf": ["nvidia-dali-tf-plugin-cuda120==2.4.0"],
        "horovod": ["horovod==0.28.1"],
        "torch": ["torch==2.13.0"],
        "test": [
            "pytest>=8,<9",
            "pytest-timeout>=2.3,<3",
            "hypothesis>=6.100,<7",
            "ruff>=0.6,<1",
            "moto[server]==5.2.5",  # a local S3 server (moto_server) for the object-storage tests and benchmark
            "gcp-storage-emulator==2026.7.19",  # a local GCS server for tests/ingest/test_beam_gcs.py
        ],
    },
    entry_points={
        "stoker.datasets": [
            "shapes = ingest.datasets.shapes:Shapes",
            "clicks = ingest.datasets.clicks:Clicks",
            "synthetic = ingest.datasets.synthetic:Synthetic",
        ],
        "stoker.models": [
            "shapes_cnn = training.models:shapes_cnn",
            "clicks_mlp = training.models:clicks_mlp",
            "resnet_small = training.models:resnet_small",
        ],
    },
)
