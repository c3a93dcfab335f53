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


def test_progress_guides_a_later_poll_only_when_it_agrees_with_the_estimate():
    from runner.engine import _agrees_with_estimate

    assert _agrees_with_estimate(total=3.4, estimated=3, remaining=1.0)
    assert not _agrees_with_estimate(total=6.0, estimated=3, remaining=1.0)  # e.g. stuck at 50%
    assert not _agrees_with_estimate(total=3.4, estimated=None, remaining=1.0)
    assert not _agrees_with_estimate(total=30.0, estimated=30, remaining=10.0)  # too far ahead


@pytest.mark.parametrize(
    ("status", "code", "worth"),
    [
        ("failed", "service_error", True),
        ("failed", "content_policy_violation", False),
        ("failed", 500, True),
        ("cancelled", None, False),
        ("completed", None, True),
    ],
)
def test_which_task_endings_are_worth_resubmitting(status, code, worth):
    from runner.engine import _worth_resubmitting

    assert _worth_resubmitting(Task(id="t", status=status, error_code=code)) is worth
