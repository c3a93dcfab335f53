"""The journal: transitions, ownership, crash consistency."""

from __future__ import annotations

import pytest

from runner.errors import OutputDirError
from runner.journal import FileInfo, Journal, read_states


def test_a_job_is_submitting_before_its_task_id_is_known(tmp_path):
    with Journal.open(tmp_path) as journal:
        journal.mark_submitting("j1")
        assert journal.get("j1").state == "submitting"
        assert journal.get("j1").task_id is None
        journal.mark_submitted("j1", "task-1", 2.5)
    with Journal.open(tmp_path) as reopened:  # as after a crash
        record = reopened.get("j1")
    assert (record.state, record.task_id, record.attempts, record.credits_total) == (
        "submitted",
        "task-1",
        1,
        2.5,
    )


def test_a_refused_submission_gives_its_attempt_back(tmp_path):
    with Journal.open(tmp_path) as journal:
        journal.mark_submitting("j1")
        journal.mark_unsent("j1")
        assert (journal.get("j1").state, journal.get("j1").attempts) == ("pending", 0)


def test_completion_records_the_verified_file(tmp_path):
    with Journal.open(tmp_path) as journal:
        journal.mark_submitting("j1")
        journal.mark_submitted("j1", "t", 1.0)
        journal.mark_result("j1", "https://cdn/x.png")
        journal.mark_completed("j1", FileInfo("images/x.png", "ab", 3, 4, 5, "image/png"))
        record = journal.get("j1")
    assert (record.state, record.file, record.width, record.result_url) == (
        "completed",
        "images/x.png",
        4,
        "https://cdn/x.png",
    )


def test_a_dir_belongs_to_one_manifest_name(tmp_path):
    with Journal.open(tmp_path) as journal:
        journal.claim("alpha", tmp_path)
        journal.claim("alpha", tmp_path)
        with pytest.raises(OutputDirError, match="alpha"):
            journal.claim("beta", tmp_path)


def test_states_can_be_read_without_writing(tmp_path):
    assert read_states(tmp_path) is None
    with Journal.open(tmp_path) as journal:
        journal.mark_failed("j1", "boom", "service_error")
    assert read_states(tmp_path) == {"j1": "failed"}
