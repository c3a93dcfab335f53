"""Real processes: kill -9 mid-run, Ctrl-C mid-run; the rerun finishes without paying twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import API_KEY
from helpers import write_manifest

pytestmark = pytest.mark.slow


def start_run(manifest: Path, url: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EVOLINK_API_KEY": API_KEY}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            str(manifest),
            "--base-url",
            url,
            "--out",
            str(manifest.parent / "out"),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr.decode()


def kill_after_submissions(process: subprocess.Popen[bytes], server, count: int) -> None:
    """kill -9 the run once the fake has taken ``count`` submissions."""
    wait_for(lambda: server.fake.counts["submissions"] >= count)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def test_sigkill_then_rerun_completes_every_job_without_paying_twice(tmp_path, loopback):
    server = loopback(task_seconds=(0.5, 1.5), small_images=True)
    manifest = write_manifest(tmp_path, 60)
    kill_after_submissions(start_run(manifest, server.url, "--concurrency", "20"), server, 25)
    killed_at = server.fake.counts["submissions"]

    code, stderr = finish(start_run(manifest, server.url, "--concurrency", "20"))
    assert code == 0, stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (results["status"] == "completed").all() and len(results) == 60
    assert killed_at < 60
    assert server.fake.counts["submissions"] <= 60 + 2
    assert not list((tmp_path / "out").rglob("*.runner-part"))


def test_a_killed_shard_reruns_into_its_own_dir_without_paying_twice(tmp_path, loopback):
    server = loopback(task_seconds=(0.5, 1.5), small_images=True)
    manifest = write_manifest(tmp_path, 120)
    args = ("--shard", "1/2", "--concurrency", "20")
    kill_after_submissions(start_run(manifest, server.url, *args), server, 25)

    code, stderr = finish(start_run(manifest, server.url, *args))
    assert code == 0, stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (results["status"] == "completed").all()
    assert 40 < len(results) < 80  # about half of 120
    assert server.fake.counts["submissions"] <= len(results) + 2


def test_ctrl_c_stops_cleanly_writes_outputs_and_exits_130(tmp_path, loopback):
    server = loopback(task_seconds=(0.5, 1.0), small_images=True)
    manifest = write_manifest(tmp_path, 40)
    process = start_run(manifest, server.url, "--concurrency", "5")
    wait_for(lambda: server.fake.counts["submissions"] >= 8)
    process.send_signal(signal.SIGINT)
    code, stderr = finish(process)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 40 and (results["status"] == "pending").any()
    sent_before = server.fake.counts["submissions"]

    code, stderr = finish(start_run(manifest, server.url, "--concurrency", "5"))
    assert code == 0, stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (results["status"] == "completed").all()
    assert sent_before < 40
    assert server.fake.counts["submissions"] == 40  # nothing submitted twice


def test_sigterm_is_handled_like_ctrl_c(tmp_path, loopback):
    server = loopback(task_seconds=(0.5, 1.0), small_images=True)
    process = start_run(write_manifest(tmp_path, 20), server.url, "--concurrency", "4")
    wait_for(lambda: server.fake.counts["submissions"] >= 2)
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process)
    assert code == 130, stderr
    assert (tmp_path / "out" / "results.csv").exists()


def test_rejected_key_exits_3_without_echoing_the_key(tmp_path, loopback):
    server = loopback(api_key="sk-the-real-one")
    code, stderr = finish(start_run(write_manifest(tmp_path, 10), server.url))
    assert code == 3
    assert "401" in stderr and API_KEY not in stderr
    assert server.fake.counts["submit_requests"] <= 1


def test_missing_key_is_a_clear_error_naming_the_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EVOLINK_API_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "run",
            str(write_manifest(tmp_path, 2)),
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "EVOLINK_API_KEY" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_some_failed_jobs_exit_1(tmp_path, loopback):
    server = loopback(
        task_seconds=(0.05, 0.1),
        fail_rate=1.0,
        fail_code="content_policy_violation",
        small_images=True,
    )
    code, stderr = finish(start_run(write_manifest(tmp_path, 3), server.url))
    assert code == 1, stderr
    assert "content_policy_violation" in stderr
