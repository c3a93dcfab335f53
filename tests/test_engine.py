"""Engine details that the end-to-end tests do not pin down."""

from __future__ import annotations

import pytest

from runner.engine import PROGRESS_MARGIN_S, _end_from_progress
from runner.evolink import Task


def test_linear_progress_predicts_the_end_from_above():
    task = Task(id="t", status="processing", progress=40)
    assert _end_from_progress(task, 2.0) == pytest.approx(3.0 + PROGRESS_MARGIN_S)


@pytest.mark.parametrize(
    ("status", "progress"), [("pending", 40), ("processing", 0), ("processing", 100)]
)
def test_progress_says_nothing_when_pending_empty_or_full(status, progress):
    assert _end_from_progress(Task(id="t", status=status, progress=progress), 2.0) is None
