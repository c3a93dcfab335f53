"""Object-store output dirs: memory:// in process, a local S3 server (moto) for real."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import anyio
import fsspec
import pandas as pd
import pytest

import runner
from runner.errors import OutputDirError
from runner.fake import FakeOptions
from runner.journal import Journal
from runner.merge import merge_runs
from runner.mirror import Mirror
from runner.objectstore import LOCK_NAME, ObjectStoreDir

from conftest import API_KEY, FAST
from helpers import write_manifest

QUICK = {
    "fake": True,
    "timing": FAST,
    "fake_options": FakeOptions(task_seconds=(0.01, 0.05), small_images=True),
}
SAME_IN_EVERY_RUN = ["job_id", "row", "sample", "prompt", "status", "file"]
SAME_FILES = [*SAME_IN_EVERY_RUN, "sha256", "bytes"]


@pytest.fixture(autouse=True)
def staging(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_STAGING_DIR", str(tmp_path / "staging"))
    yield
    fsspec.filesystem("memory").store.clear()


def stored_frame(url: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(ObjectStoreDir(url).read_bytes("results.parquet") or b""))


def test_a_run_into_an_object_store_writes_what_a_local_run_writes(tmp_path):
    manifest = write_manifest(tmp_path, 12)
    local = runner.run(manifest, out=tmp_path / "local", **QUICK)
    remote = runner.run(manifest, out="memory://bucket/run", **QUICK)
    assert remote[SAME_IN_EVERY_RUN].equals(local[SAME_IN_EVERY_RUN])
    store = ObjectStoreDir("memory://bucket/run")
    stored = stored_frame("memory://bucket/run")
    written = pd.read_parquet(tmp_path / "local" / "results.parquet")
    assert stored[SAME_IN_EVERY_RUN].equals(written[SAME_IN_EVERY_RUN])
    assert list(stored["sha256"]) == list(remote["sha256"])
    for name in ("results.csv", "files.json", "metadata.jsonl", "run.json", "gallery.html"):
        assert store.read_bytes(name), name
    entries = json.loads(store.read_bytes("files.json") or b"")
    assert len(entries) == 12
    for entry in entries:  # every image is there, byte for byte what was verified
        data = store.read_bytes(entry["path"]) or b""
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert store.read_bytes(LOCK_NAME) is None  # released
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())


def test_a_rerun_from_a_clean_disk_resumes_from_the_store(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, 10)
    runner.run(manifest, out="memory://bucket/r", limit=4, **QUICK)
    monkeypatch.setenv("RUNNER_STAGING_DIR", str(tmp_path / "another-machine"))
    frame = runner.run(manifest, out="memory://bucket/r", **QUICK)
    info = json.loads(ObjectStoreDir("memory://bucket/r").read_bytes("run.json") or b"")
    assert info["latest"]["submissions"] == 6  # the 4 done ones were not sent again
    assert (frame["status"] == "completed").all() and len(frame) == 10
    runner.run(manifest, out="memory://bucket/r", **QUICK)
    info = json.loads(ObjectStoreDir("memory://bucket/r").read_bytes("run.json") or b"")
    assert info["latest"]["submissions"] == 0


def test_an_image_missing_from_the_store_is_made_again(tmp_path):
    manifest = write_manifest(tmp_path, 5)
    first = runner.run(manifest, out="memory://bucket/m", **QUICK)
    ObjectStoreDir("memory://bucket/m").remove(first["file"][2])
    again = runner.run(manifest, out="memory://bucket/m", **QUICK)
    info = json.loads(ObjectStoreDir("memory://bucket/m").read_bytes("run.json") or b"")
    assert info["latest"]["submissions"] == 1
    assert ObjectStoreDir("memory://bucket/m").size_of(first["file"][2]) == again["bytes"][2]


def test_the_lock_keeps_a_second_writer_out_and_a_stale_lock_is_taken_over(monkeypatch):
    first, second = ObjectStoreDir("memory://b/p"), ObjectStoreDir("memory://b/p")
    first.acquire_lock()
    with pytest.raises(OutputDirError, match="in use by runner process"):
        second.acquire_lock()
    monkeypatch.setattr("runner.objectstore.LOCK_STALE_S", -1.0)  # the holder went silent
    second.acquire_lock()
    with pytest.raises(OutputDirError, match="taken over"):
        first.refresh_lock()
    first.release_lock()  # not its lock any more: left alone
    assert json.loads(second.read_bytes(LOCK_NAME) or b"")["owner"] == second.owner
    second.release_lock()
    assert second.read_bytes(LOCK_NAME) is None


def test_a_run_refuses_a_prefix_another_writer_holds(tmp_path):
    manifest = write_manifest(tmp_path, 3)
    holder = ObjectStoreDir("memory://bucket/held")
    holder.acquire_lock()
    with pytest.raises(OutputDirError, match="in use"):
        runner.run(manifest, out="memory://bucket/held", **QUICK)
    assert holder.read_bytes("state.sqlite") is None


def test_merge_reads_and_writes_object_stores(tmp_path):
    manifest = write_manifest(tmp_path, 12)
    runner.run(manifest, out=tmp_path / "whole", **QUICK)
    whole = pd.read_parquet(tmp_path / "whole" / "results.parquet")
    for k in range(3):
        runner.run(manifest, out=f"memory://bucket/s{k}", shard=f"{k}/3", **QUICK)
    shards = [f"memory://bucket/s{k}" for k in range(3)]
    report = merge_runs(shards, tmp_path / "merged", manifest)
    assert report.jobs == 12 and not report.missing and not report.duplicates
    merged = pd.read_parquet(tmp_path / "merged" / "results.parquet")
    assert merged[SAME_IN_EVERY_RUN].equals(whole[SAME_IN_EVERY_RUN])
    in_shards = pd.concat([stored_frame(url) for url in shards]).set_index("job_id")
    for job_id, file in zip(merged["job_id"], merged["file"], strict=True):
        assert (tmp_path / "merged" / file).stat().st_size == in_shards.loc[job_id, "bytes"]
    merge_runs(shards, "memory://bucket/all", manifest)
    stored = stored_frame("memory://bucket/all")
    assert stored[SAME_FILES].equals(merged[SAME_FILES])
    store = ObjectStoreDir("memory://bucket/all")
    for file in merged["file"]:
        assert store.read_bytes(file) == (tmp_path / "merged" / file).read_bytes()
    frame = runner.run(manifest, out="memory://bucket/all", **QUICK)  # resumes from the merge
    assert (frame["status"] == "completed").all()
    info = json.loads(ObjectStoreDir("memory://bucket/all").read_bytes("run.json") or b"")
    assert info["latest"]["submissions"] == 0


# -- against a local S3 server, through the command line ---------------------------------


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_s3_run_rerun_from_a_clean_disk_and_merge_back(tmp_path, local_s3):
    manifest = write_manifest(tmp_path, 10)
    url = local_s3.url("cli-run")
    machine_a = {"RUNNER_STAGING_DIR": str(tmp_path / "a")}
    done = cli("run", str(manifest), "--fake", "--out", url, env=machine_a)
    assert done.returncode == 0, done.stderr
    local = cli("run", str(manifest), "--fake", "--out", str(tmp_path / "local"), env=machine_a)
    assert local.returncode == 0, local.stderr
    store = ObjectStoreDir(url)
    stored = stored_frame(url)
    expected = pd.read_parquet(tmp_path / "local" / "results.parquet")
    assert stored[["job_id", "row", "prompt", "status", "file"]].equals(
        expected[["job_id", "row", "prompt", "status", "file"]]
    )
    assert sorted(store.sizes("images")) == sorted(expected["file"])

    again = cli(
        "run",
        str(manifest),
        "--fake",
        "--out",
        url,
        env={"RUNNER_STAGING_DIR": str(tmp_path / "b")},
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(store.read_bytes("run.json") or b"")["latest"]["submissions"] == 0

    merged = cli("merge", url, "--out", str(tmp_path / "merged"), "-m", str(manifest), env={})
    assert merged.returncode == 0, merged.stderr
    table = pd.read_csv(tmp_path / "merged" / "results.csv")
    assert len(table) == 10 and (table["status"] == "completed").all()
    for file, size in zip(table["file"], table["bytes"], strict=True):
        assert (tmp_path / "merged" / file).stat().st_size == size


@pytest.mark.slow
def test_s3_journal_is_uploaded_during_the_run_and_a_killed_run_resumes_elsewhere(
    tmp_path, local_s3, loopback
):
    server = loopback(task_seconds=(0.5, 1.5), small_images=True)
    manifest = write_manifest(tmp_path, 40)
    url = local_s3.url("killed")
    args = ["run", str(manifest), "--base-url", server.url, "--out", url, "--concurrency", "8"]
    env = {"EVOLINK_API_KEY": API_KEY, "RUNNER_STAGING_DIR": str(tmp_path / "a")}
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args, "--sync-interval", "0.5"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    store = ObjectStoreDir(url)
    deadline = time.monotonic() + 120
    while len(store.sizes("images")) < 12:  # images (and the journal) arrive mid-run
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    assert store.read_bytes("state.sqlite") is not None
    assert store.read_bytes("results.csv") is None  # the tables come at the end
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    sent_before = server.fake.counts["submissions"]
    assert sent_before < 40

    # another machine (a clean staging dir); same host, so the dead writer's lock is stale
    env["RUNNER_STAGING_DIR"] = str(tmp_path / "b")
    rerun = cli(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr
    table = stored_frame(url)
    assert len(table) == 40 and (table["status"] == "completed").all()
    assert sorted(store.sizes("images")) == sorted(table["file"])
    # resubmitted at most: what was in flight at the kill + what finished after the
    # last upload (one interval)
    assert server.fake.counts["submissions"] <= 40 + 8 + 8


def test_plan_against_an_object_store_counts_what_is_done_there(tmp_path):
    from typer.testing import CliRunner

    from runner.cli import app

    manifest = write_manifest(tmp_path, 8)
    runner.run(manifest, out="memory://bucket/p", limit=3, **QUICK)
    result = CliRunner().invoke(
        app, ["plan", str(manifest), "--json", "--out", "memory://bucket/p"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["existing"] == {
        "to_run": 5,
        "done": 3,
        "failed": 0,
        "dropped": 0,
    }


@pytest.mark.parametrize(
    ("url", "said"),
    [("nosuch://bucket/x", "nosuch"), ("gcs://bucket/x", "gcsfs")],
)
def test_an_unusable_url_is_one_clear_line_and_exit_2(tmp_path, url, said):
    from typer.testing import CliRunner

    from runner.cli import app

    result = CliRunner().invoke(
        app, ["run", str(write_manifest(tmp_path, 2)), "--fake", "--out", url]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr


def test_a_journal_that_did_not_change_is_not_uploaded_again(tmp_path, monkeypatch):
    uploads: list[str] = []
    original = ObjectStoreDir.upload

    def counting(self, local, relative):
        uploads.append(relative)
        return original(self, local, relative)

    monkeypatch.setattr(ObjectStoreDir, "upload", counting)
    mirror = Mirror("memory://bucket/j")
    staging = mirror.prepare()

    async def three_syncs() -> None:
        with Journal.open(staging) as journal:
            journal.claim("m", mirror.url)
            await mirror.sync(journal)
            await mirror.sync(journal)  # nothing changed
            journal.mark_submitting("job-1")
            await mirror.sync(journal)

    anyio.run(three_syncs)
    mirror.close(clean=True)
    assert uploads.count("state.sqlite") == 2


def test_s3_without_credentials_is_one_line_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    manifest = str(write_manifest(tmp_path, 2))
    result = subprocess.run(
        [sys.executable, "-m", "runner", "run", manifest, "--fake", "--out", "s3://some-bucket/x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "runner: error: s3://some-bucket/x: cannot take the lock: NoCredentialsError: "
        "Unable to locate credentials"
    ]
