"""Device setup that must happen before TensorFlow initialises its runtime."""

from __future__ import annotations

import logging

import tensorflow as tf

log = logging.getLogger(__name__)


def configure(devices: int) -> list[str]:
    """Use ``devices`` GPUs when present, else split the CPU into ``devices`` logical devices.

    Call before any TensorFlow op runs; later calls that ask for the same split are no-ops.
    Returns the device names replicas should use.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < devices:
            raise ValueError(f"DEVICES={devices} but this machine has {len(gpus)} GPU(s); lower DEVICES")
        return [f"/gpu:{i}" for i in range(devices)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < devices:
            raise RuntimeError(
                f"TensorFlow was initialised with {have} CPU device(s) before stoker could split the CPU "
                f"into {devices}; set up devices before running any TensorFlow op"
            ) from None
    return [f"/cpu:{i}" for i in range(devices)]
