"""Faults lose nothing: every job ends completed with a verified file or failed with
its error recorded, and a rerun finishes the rest."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

import pytest

from runner.batch import LOCK_NAME
from runner.errors import OutputDirError, RunAborted

from conftest import API_KEY, FAST
from helpers import FakeApi, write_manifest


def assert_nothing_lost(outcome, *, unsent_ok: bool = False) -> None:
    frame = outcome.frame
    for row in frame.itertuples():
        if row.status == "completed":
            data = (outcome.out / row.file).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row.sha256
        elif row.status == "pending":
            assert unsent_ok and not row.error, row
        else:
            assert row.status == "failed" and row.error, row
    leftovers = [p for p in outcome.out.rglob("*") if p.name.endswith((".runner-part", ".tmp"))]
    assert leftovers == []


def test_every_job_completes_or_fails_with_its_error_under_many_faults(tmp_path):
    api = FakeApi(fail_rate=0.15, error_rate=0.15, truncate_rate=0.2, rate_limit=50.0, burst=5)
    outcome = api.run(
        write_manifest(tmp_path, 100), tmp_path / "out", concurrency=20, max_attempts=4
    )
    assert outcome.error is None
    assert_nothing_lost(outcome)
    assert (outcome.frame["status"] == "completed").sum() >= 97
    assert api.fake.counts["downloads_truncated"] > 0
    assert api.fake.counts["submit_429"] > 0


def test_user_fixable_task_failure_is_not_retried(tmp_path):
    api = FakeApi(fail_rate=1.0, fail_code="content_policy_violation")
    outcome = api.run(write_manifest(tmp_path, 5), tmp_path / "out", max_attempts=4)
    assert api.fake.counts["submissions"] == 5
    assert set(outcome.frame["status"]) == {"failed"}
    assert outcome.frame["error"].str.contains("content_policy_violation").all()
    assert_nothing_lost(outcome)


def test_retryable_task_failure_is_resubmitted_up_to_max_attempts(tmp_path):
    api = FakeApi(fail_rate=1.0, fail_code="service_error")
    outcome = api.run(write_manifest(tmp_path, 4), tmp_path / "out", max_attempts=3)
    assert api.fake.counts["submissions"] == 12
    assert (outcome.frame["attempts"] == 3).all()
    assert set(outcome.frame["status"]) == {"failed"}


def test_throttling_does_not_use_up_attempts(tmp_path):
    api = FakeApi(rate_limit=40.0, burst=1)
    outcome = api.run(
        write_manifest(tmp_path, 20), tmp_path / "out", concurrency=20, max_attempts=1
    )
    assert api.fake.counts["submit_429"] > 0
    assert (outcome.frame["status"] == "completed").all()


@pytest.mark.parametrize(
    "refusal", [{"api_key": "sk-the-right-one"}, {"refuse_status": 402}, {"refuse_status": 403}]
)
def test_refused_key_or_quota_stops_after_one_submission(tmp_path, refusal):
    api = FakeApi(**refusal)
    outcome = api.run(write_manifest(tmp_path, 30), tmp_path / "out", concurrency=10)
    assert isinstance(outcome.error, RunAborted)
    assert outcome.error.exit_code == 3
    assert api.fake.counts["submit_requests"] == 1
    assert set(outcome.frame["status"]) == {"pending"}
    assert API_KEY not in str(outcome.error)


def test_refusal_midway_keeps_finished_work_and_follows_tasks_in_flight(tmp_path):
    api = FakeApi(task_seconds=(0.2, 0.3))
    manifest = write_manifest(tmp_path, 30)
    first = api.run(manifest, tmp_path / "out", concurrency=5, max_credits=25)
    done = int((first.frame["status"] == "completed").sum())
    api.fake.options.refuse_status = 402
    second = api.run(manifest, tmp_path / "out", concurrency=5)
    assert isinstance(second.error, RunAborted)
    assert int((second.frame["status"] == "completed").sum()) == done
    assert_nothing_lost(second, unsent_ok=True)


def test_the_api_key_is_never_written_anywhere(tmp_path):
    api = FakeApi(fail_rate=0.3, fail_code="content_policy_violation", error_rate=0.2)
    outcome = api.run(write_manifest(tmp_path, 10), tmp_path / "out")
    api2 = FakeApi(api_key="sk-other")
    refused = api2.run(write_manifest(tmp_path, 10), tmp_path / "out2")
    for folder in (outcome.out, refused.out):
        for path in folder.rglob("*"):
            if path.is_file():
                assert API_KEY.encode() not in path.read_bytes(), path
    assert API_KEY not in repr(refused.error) and API_KEY not in str(refused.error)


def test_rerun_polls_known_tasks_instead_of_resubmitting(tmp_path):
    api = FakeApi(task_seconds=(0.3, 0.5))
    manifest = write_manifest(tmp_path, 10)
    out = tmp_path / "out"
    # A run that stops right after submitting (a budget of 0 after the first submissions
    # is not possible, so mark jobs as submitted through a first run with a short timeout).
    first = api.run(manifest, out, task_timeout=0.05, max_attempts=1)
    assert set(first.frame["status"]) == {"failed"}
    db = sqlite3.connect(out / "state.sqlite")
    db.execute("UPDATE jobs SET state='submitted', error=NULL")  # as if killed mid-poll
    db.commit()
    db.close()
    second = api.run(manifest, out)
    assert (second.frame["status"] == "completed").all()
    assert api.fake.counts["submissions"] == 10


def test_missing_file_is_downloaded_again_without_resubmitting(tmp_path):
    api = FakeApi()
    manifest = write_manifest(tmp_path, 3)
    first = api.run(manifest, tmp_path / "out")
    (first.out / first.frame["file"][0]).unlink()
    second = api.run(manifest, tmp_path / "out")
    assert (second.frame["status"] == "completed").all()
    assert api.fake.counts["submissions"] == 3
    assert api.fake.counts["downloads"] == 4


def test_expired_link_is_resubmitted(tmp_path):
    api = FakeApi()
    manifest = write_manifest(tmp_path, 3)
    first = api.run(manifest, tmp_path / "out")
    (first.out / first.frame["file"][0]).unlink()
    api.fake.options.link_ttl = 0.3
    time.sleep(0.4)  # the first run's links are now gone; a new task's link lives 0.3 s
    second = api.run(manifest, tmp_path / "out")
    assert (second.frame["status"] == "completed").all()
    assert api.fake.counts["submissions"] == 4


def test_failed_jobs_rerun_only_with_retry_failed(tmp_path):
    api = FakeApi(fail_rate=1.0, fail_code="content_policy_violation")
    manifest = write_manifest(tmp_path, 3)
    api.run(manifest, tmp_path / "out")
    api.fake.options.fail_rate = 0.0
    again = api.run(manifest, tmp_path / "out")
    assert api.fake.counts["submissions"] == 3 and set(again.frame["status"]) == {"failed"}
    retried = api.run(manifest, tmp_path / "out", retry_failed=True)
    assert api.fake.counts["submissions"] == 6
    assert (retried.frame["status"] == "completed").all()


def test_task_without_final_status_in_time_fails_with_timeout(tmp_path):
    api = FakeApi(task_seconds=(30, 30))
    outcome = api.run(
        write_manifest(tmp_path, 2), tmp_path / "out", task_timeout=0.1, max_attempts=1
    )
    assert set(outcome.frame["status"]) == {"failed"}
    assert outcome.frame["error"].str.contains("no final status").all()


def test_output_dir_of_another_manifest_is_refused(tmp_path):
    api = FakeApi()
    manifest = write_manifest(tmp_path, 2)
    api.run(manifest, tmp_path / "out")
    manifest.write_text(manifest.read_text().replace("name: faults", "name: other"))
    with pytest.raises(OutputDirError, match="faults"):
        api.run(manifest, tmp_path / "out")


def test_output_dir_in_use_is_refused(tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with (out / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(OutputDirError, match="in use"):
            FakeApi().run(write_manifest(tmp_path, 2), out)


def test_credits_are_recorded_per_job_and_in_total(tmp_path):
    api = FakeApi()
    outcome = api.run(write_manifest(tmp_path, 4), tmp_path / "out")
    assert list(outcome.frame["credits"]) == [2.5] * 4
    info = json.loads((outcome.out / "run.json").read_text())
    assert info["totals"]["credits_reserved"] == 10.0
    assert info["resolved_manifest"]["name"] == "faults"


def test_max_credits_stops_submitting_before_the_budget_is_passed(tmp_path):
    api = FakeApi()
    outcome = api.run(write_manifest(tmp_path, 10), tmp_path / "out", max_credits=11)
    assert api.fake.counts["submissions"] == 4
    assert (outcome.frame["status"] == "completed").sum() == 4
    assert (outcome.frame["status"] == "pending").sum() == 6


def test_an_unreachable_api_stops_at_once_and_leaves_every_job_pending(tmp_path):
    import anyio
    import httpx

    from runner.batch import RunOptions, run_plan
    from runner.expand import plan_file

    calls = []

    def refuse(request):
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    manifest = write_manifest(tmp_path, 20)
    options = RunOptions(
        out=tmp_path / "out",
        base_url="http://nowhere.test",
        api_key=API_KEY,
        transport=httpx.MockTransport(refuse),
        timing=FAST,
        handle_signals=False,
        concurrency=8,
        max_attempts=3,
    )
    with pytest.raises(RunAborted, match="cannot reach the API") as caught:
        anyio.run(run_plan, plan_file(manifest), options)
    assert len(calls) == 3  # one job's attempts (max_attempts=3), not every job's
    assert set(caught.value.results["status"]) == {"pending"}

    again = FakeApi().run(manifest, tmp_path / "out")  # the URL fixed: the rerun finishes
    assert (again.frame["status"] == "completed").all()
