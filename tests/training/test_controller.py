"""Pure parts of the outer loop: which checkpoint every worker resumes from."""

from __future__ import annotations

import numpy as np
import pytest

from stoker.errors import StokerError
from training.checkpoints import common_step


def test_no_checkpoints_anywhere_starts_fresh():
    assert common_step(np.full((2, 2), -1)) is None


def test_single_worker_takes_its_newest():
    assert common_step(np.array([[20, 40]])) == 40


def test_a_worker_one_checkpoint_ahead_is_brought_back():
    assert common_step(np.array([[20, 40], [40, 60]])) == 40


def test_no_common_step_is_a_clear_error():
    with pytest.raises(StokerError, match="no step in common"):
        common_step(np.array([[20, -1], [40, -1]]))
