"""Training: run config, models, the inner loop (trainer) and the outer loop (controller)."""

import os

# tf-keras (Keras 2) for every backend: with Keras 3, model.fit under MultiWorkerMirrored
# fails and Horovod's Keras optimizer does not average gradients. Must precede TF's import.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
