"""Ingestion benchmarks (``make bench``): every suite, its JSON under ``benchmarks/results/``."""

from stoker import cli

cli.quiet_library_warnings()  # before any suite imports Beam's GCP modules (VERBOSE=1 keeps the warnings)
