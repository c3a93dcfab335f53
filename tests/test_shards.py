"""Shards and merge: split a manifest by job id, run the parts, merge them into one dir."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import runner
from runner import ManifestError
from runner.cli import app
from runner.expand import plan_file
from runner.fake import FakeOptions
from runner.select import parse_shard, selection_from_options

from conftest import FAST
from helpers import write_manifest

QUICK = {
    "fake": True,
    "timing": FAST,
    "fake_options": FakeOptions(task_seconds=(0.01, 0.05), small_images=True),
}


def test_shards_hold_every_job_exactly_once_and_adding_rows_moves_none(tmp_path):
    manifest = write_manifest(tmp_path, 40, repeat=2)
    plan = plan_file(manifest)
    parts = [selection_from_options(shard=f"{k}/8").apply(plan) for k in range(8)]
    ids = [job.job_id for part in parts for job in part]
    assert sorted(ids) == sorted(job.job_id for job in plan.jobs)
    before = {job.job_id: k for k, part in enumerate(parts) for job in part}
    bigger = plan_file(write_manifest(tmp_path, 60, repeat=2))
    after = {
        j.job_id: k for k in range(8) for j in selection_from_options(shard=f"{k}/8").apply(bigger)
    }
    assert all(after[job_id] == k for job_id, k in before.items())


@pytest.mark.parametrize("spec", ["8/8", "-1/8", "a/b", "1", "0/0"])
def test_bad_shard_specs_are_refused(spec):
    with pytest.raises(ManifestError):
        parse_shard(spec)


def test_a_shard_writes_to_its_own_dir_and_divides_the_manifest_limits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, 8, extra="limits: {concurrency: 8}\n")
    runner.run(manifest, shard="1/4", **QUICK)
    info = json.loads((tmp_path / "outputs/faults/shard-1-of-4/run.json").read_text())
    assert info["latest"]["settings"]["concurrency"] == 2
    runner.run(manifest, shard="2/4", **QUICK, out=tmp_path / "exact", concurrency=5)
    info = json.loads((tmp_path / "exact/run.json").read_text())
    assert info["latest"]["settings"]["concurrency"] == 5  # command-line limits: per shard


def test_merged_shards_equal_one_unsharded_run(tmp_path):
    manifest = write_manifest(tmp_path, 15, repeat=2)
    single = runner.run(manifest, out=tmp_path / "single", **QUICK)
    for k in range(4):
        runner.run(manifest, shard=f"{k}/4", out=tmp_path / f"s{k}", **QUICK)
    result = CliRunner().invoke(
        app,
        [
            "merge",
            *(str(tmp_path / f"s{k}") for k in range(4)),
            "--out",
            str(tmp_path / "all"),
            "--manifest",
            str(manifest),
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "30 jobs, 30 completed, 0 present twice, 0 missing" in result.stderr

    merged = pd.read_parquet(tmp_path / "all" / "results.parquet")
    columns = ["job_id", "row", "sample", "name", "prompt", "size", "status", "file"]
    single_table = pd.read_parquet(tmp_path / "single" / "results.parquet")
    assert merged[columns].equals(single_table[columns])
    files = json.loads((tmp_path / "all" / "files.json").read_text())
    assert sorted(e["path"] for e in files) == sorted(single["file"])
    for row in merged.itertuples():
        data = (tmp_path / "all" / row.file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256
    names = [
        json.loads(line)["file_name"]
        for line in (tmp_path / "all" / "metadata.jsonl").read_text().splitlines()
    ]
    assert sorted(names) == sorted(single["file"])
    shown = CliRunner().invoke(app, ["report", str(tmp_path / "all")])
    assert shown.exit_code == 0, shown.stderr
    assert "merged from" in shown.stderr and "4 dirs" in shown.stderr

    again = runner.run(manifest, out=tmp_path / "all", **QUICK)  # the journal came along
    assert (again["status"] == "completed").all()
    assert json.loads((tmp_path / "all" / "run.json").read_text())["latest"]["submissions"] == 0


def test_merge_reports_jobs_present_twice_and_missing(tmp_path):
    manifest = write_manifest(tmp_path, 10)
    runner.run(manifest, shard="0/2", out=tmp_path / "a", **QUICK)
    runner.run(manifest, shard="0/2", out=tmp_path / "b", **QUICK)  # the same shard twice
    result = CliRunner().invoke(
        app,
        [
            "merge",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--out",
            str(tmp_path / "m"),
            "-m",
            str(manifest),
        ],
    )
    assert result.exit_code == 0, result.stderr
    half = len(pd.read_parquet(tmp_path / "a" / "results.parquet"))
    assert f"{half} present twice, {10 - half} missing from every input" in result.stderr


def test_merging_runs_of_different_manifests_is_refused(tmp_path):
    first = write_manifest(tmp_path, 2)
    runner.run(first, out=tmp_path / "a", **QUICK)
    first.write_text(first.read_text().replace("name: faults", "name: other"))
    runner.run(first, out=tmp_path / "b", **QUICK)
    result = CliRunner().invoke(
        app, ["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]
    )
    assert result.exit_code == 2 and "different manifests" in result.stderr


def test_merging_again_replaces_an_image_that_changed_even_at_the_same_size(tmp_path):
    manifest = write_manifest(tmp_path, 2)
    runner.run(manifest, out=tmp_path / "a", **QUICK)
    merge_args = ["merge", str(tmp_path / "a"), "--out", str(tmp_path / "m")]
    assert CliRunner().invoke(app, merge_args).exit_code == 0
    placed = tmp_path / "m" / pd.read_parquet(tmp_path / "m" / "results.parquet")["file"][0]
    placed.unlink()
    placed.write_bytes(b"x" * (tmp_path / "a" / placed.relative_to(tmp_path / "m")).stat().st_size)
    assert CliRunner().invoke(app, merge_args).exit_code == 0
    assert placed.read_bytes() == (tmp_path / "a" / placed.relative_to(tmp_path / "m")).read_bytes()
