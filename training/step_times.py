"""Per-step host timings of the training loop: input wait and compute, and what they add up to."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class StepTimes:
    """Per-step timings: waiting for the next batch, and the step itself.

    Steps run inside a compiled loop (``train.steps_per_loop``) take their batches inside it:
    their wait is timed in the graph (``training.trainer``; NaN, not timed, under op determinism),
    and their compute is the rest of the loop's time per step."""

    wait: list[float] = dataclasses.field(default_factory=list)
    compute: list[float] = dataclasses.field(default_factory=list)

    def fraction(self) -> float | None:
        """Input wait / step time over the steady state (the first step compiles); None when no
        step after the first timed its wait."""
        pairs = [(w, c) for w, c in zip(self.wait[1:], self.compute[1:], strict=True) if not math.isnan(w)]
        w, c = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        if not pairs:
            return None
        return w / (w + c) if w + c else 0.0

    def per_step(self) -> list[float | None]:
        return [None if math.isnan(w) else (round(w / (w + c), 4) if w + c else 0.0) for w, c in self.pairs()]

    def step_seconds(self) -> list[float]:
        return [(0.0 if math.isnan(w) else w) + c for w, c in self.pairs()]

    def pairs(self) -> list[tuple[float, float]]:
        return list(zip(self.wait, self.compute, strict=True))
