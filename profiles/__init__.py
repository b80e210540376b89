"""profiles: measure the input pipeline against the model, name the bottleneck, say what to change.

``python -m profiles`` (``make profile``) runs ``profiles.harness``; ``diagnose`` is a pure function
of a ``measurements.Measurements`` value; ``timing`` is shared with ``benchmarks``.
"""
