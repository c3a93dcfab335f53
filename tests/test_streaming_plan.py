"""Large manifests: a plan keeps ids, not Jobs, and renders Jobs again when asked."""

from __future__ import annotations

import io
import json
import tracemalloc

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import runner
from runner import ManifestError
from runner.cli import app
from runner.expand import plan_file
from runner.select import selection_from_options

from conftest import FAST
from helpers import write_manifest

QUICK = {"fake": True, "timing": FAST}


@pytest.fixture
def keep_few(monkeypatch):
    """Plans keep at most 3 Jobs: every test here then takes the large-manifest path."""
    monkeypatch.setattr("runner.expand.KEEP_JOBS", 3)


def test_a_plan_too_large_to_keep_renders_the_same_jobs_again(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, 12, repeat=2)
    small = plan_file(manifest)
    assert small.all.kept is not None
    monkeypatch.setattr("runner.expand.KEEP_JOBS", 3)
    large = plan_file(manifest)
    assert large.all.kept is None
    assert large.jobs == small.jobs
    assert large.job_ids == small.job_ids
    assert large.estimated_credits() == small.estimated_credits()
    assert large.unique_requests() == small.unique_requests()


@pytest.mark.parametrize(
    "options",
    [
        {"shard": "1/3"},
        {"limit": 4},
        {"sample": 5, "seed": 2},
        {"sample": 5, "seed": 2, "limit": 2},
        {"rows": "2-7", "where": "sample == 1"},
    ],
)
def test_selections_of_a_large_plan_equal_those_of_a_small_one(tmp_path, monkeypatch, options):
    manifest = write_manifest(tmp_path, 12, repeat=2)
    selection = selection_from_options(**options)
    small_plan, small = selection.plan_file(manifest)
    monkeypatch.setattr("runner.expand.KEEP_JOBS", 3)
    large_plan, large = selection.plan_file(manifest)
    assert small is not None and large is not None
    assert large.ids == small.ids
    assert large.credits == small.credits
    assert large_plan.jobs_in(large) == small_plan.jobs_in(small)
    assert selection.apply(large_plan) == small_plan.jobs_in(small)


def test_input_changed_between_passes_is_an_error_not_a_wrong_job(tmp_path, keep_few):
    manifest = write_manifest(tmp_path, 12)
    plan = plan_file(manifest)
    write_manifest(tmp_path, 12, extra="vars: {unused: 1}\n")  # same jobs: still fine
    assert len(plan.jobs) == 12
    (tmp_path / "rows.csv").write_text("name\n" + "".join(f"other {i}\n" for i in range(12)))
    with pytest.raises(ManifestError, match="changed while runner was reading"):
        plan.jobs  # noqa: B018


def test_a_filename_clash_beyond_the_kept_jobs_still_names_both_rows(write, keep_few):
    write("d.csv", "n\n" + "".join(f"{i}\n" for i in range(10)) + "3\n")
    manifest = write(
        "m.yaml", "version: 1\nrows: d.csv\nprompt: 'p {{ row }}'\nfilename: '{{ n }}.png'\n"
    )
    with pytest.raises(ManifestError) as caught:
        plan_file(manifest)
    message = str(caught.value)
    assert "'3.png' is also the file name of row 3" in message and "row 10" in message


def test_plan_memory_holds_ids_not_jobs(tmp_path, monkeypatch):
    """40,000 jobs: with every Job kept the peak is over 50 MB; a plan that keeps ids,
    file names and request hashes needs a fraction of that."""
    manifest = write_manifest(tmp_path, 40_000)
    monkeypatch.setattr("runner.expand.KEEP_JOBS", 100)
    tracemalloc.start()
    try:
        plan = plan_file(manifest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == 40_000
    assert peak < 40_000 * 600, f"{peak / 40_000:.0f} bytes per job"


def test_plan_json_and_a_limited_run_of_a_large_manifest(tmp_path, monkeypatch, keep_few):
    monkeypatch.chdir(tmp_path)
    manifest = write_manifest(tmp_path, 30)
    result = CliRunner().invoke(app, ["plan", str(manifest), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["jobs"] == 30 and len(set(summary["job_ids"])) == 30
    assert len(summary["first_prompts"]) == 5
    parts = []
    for k in range(4):
        shard = CliRunner().invoke(app, ["plan", str(manifest), "--json", "--shard", f"{k}/4"])
        parts += json.loads(shard.stdout)["job_ids"]
    assert sorted(parts) == sorted(summary["job_ids"])
    frame = runner.run(manifest, out=tmp_path / "o", limit=5, **QUICK)
    assert list(frame["job_id"]) == summary["job_ids"][:5]
    assert (frame["status"] == "completed").all()
    frame = runner.run(manifest, out=tmp_path / "o", sample=4, seed=3, **QUICK)
    assert set(summary["job_ids"][:5]) <= set(frame["job_id"])  # earlier jobs stay shown
    assert list(frame["job_id"]) == [i for i in summary["job_ids"] if i in set(frame["job_id"])]


OUTPUTS = ("results.csv", "results.parquet", "files.json", "metadata.jsonl")


def test_outputs_written_in_chunks_equal_outputs_written_at_once(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, 23, repeat=2)
    whole = runner.run(manifest, out=tmp_path / "o", **QUICK)
    at_once = {name: (tmp_path / "o" / name).read_bytes() for name in OUTPUTS}
    monkeypatch.setattr("runner.results_writer.CHUNK_JOBS", 5)
    monkeypatch.setattr("runner.expand.KEEP_JOBS", 3)
    chunked = runner.run(manifest, out=tmp_path / "o", **QUICK)  # a rerun writes them again
    assert chunked.equals(whole)
    for name in ("results.csv", "files.json", "metadata.jsonl"):
        assert (tmp_path / "o" / name).read_bytes() == at_once[name], name
    table = pd.read_parquet(tmp_path / "o" / "results.parquet")
    assert table.equals(pd.read_parquet(io.BytesIO(at_once["results.parquet"])))
    assert pq.ParquetFile(tmp_path / "o" / "results.parquet").num_row_groups == 10
    files = json.loads((tmp_path / "o" / "files.json").read_text())
    assert [entry["job_id"] for entry in files] == list(whole["job_id"])
    assert not list((tmp_path / "o").glob(".*.tmp"))


def test_a_rerun_that_changes_nothing_leaves_the_chunked_outputs_untouched(tmp_path, monkeypatch):
    monkeypatch.setattr("runner.results_writer.CHUNK_JOBS", 4)
    manifest = write_manifest(tmp_path, 10)
    runner.run(manifest, out=tmp_path / "o", **QUICK)
    before = {name: (tmp_path / "o" / name).stat().st_mtime_ns for name in OUTPUTS}
    runner.run(manifest, out=tmp_path / "o", **QUICK)
    after = {name: (tmp_path / "o" / name).stat().st_mtime_ns for name in OUTPUTS}
    assert after == before


def test_a_large_run_shows_its_first_jobs_in_the_gallery_and_keeps_no_table(tmp_path, monkeypatch):
    monkeypatch.setattr("runner.results_writer.CHUNK_JOBS", 4)
    monkeypatch.setattr("runner.results_writer.GALLERY_MAX_CARDS", 6)
    manifest = write_manifest(tmp_path, 12)
    assert runner.run(manifest, out=tmp_path / "o", keep_frame=False, **QUICK) is None
    assert len(pd.read_parquet(tmp_path / "o" / "results.parquet")) == 12
    page = (tmp_path / "o" / "gallery.html").read_text()
    assert page.count('<article class="card') == 6
    assert "the first 6 of 12 jobs" in page
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", str(manifest), "--fake", "--out", "o"])
    assert result.exit_code == 0, result.stderr
