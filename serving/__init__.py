"""Serve what was trained: the SavedModel with the dataset's own parse and preprocess inside
(``make export``), TFLite files (``FORMAT=tflite``) and batch inference on Beam (``make predict``).

Floor above ``training``: it reads a run's ``config.json`` and the chief's checkpoint and builds
the model with ``training.models``; nothing below imports it.
"""
