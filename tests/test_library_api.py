"""The library API: what ``import runner`` offers."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

import runner

from helpers import write_manifest


def test_all_is_sorted_and_complete():
    assert runner.__all__ == sorted(runner.__all__)
    for name in ("load_manifest", "plan", "run", "arun", "RunnerError"):
        assert name in runner.__all__
    assert all(hasattr(runner, name) for name in runner.__all__)


def test_every_runner_exception_derives_from_runner_error():
    for name in runner.__all__:
        value = getattr(runner, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, runner.RunnerError)


def test_run_returns_a_dataframe_of_results(tmp_path):
    frame = runner.run(write_manifest(tmp_path, 12), out=tmp_path / "out", fake=True)
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 12 and (frame["status"] == "completed").all()


@pytest.mark.anyio
async def test_arun_works_inside_an_event_loop(tmp_path):
    frame = await runner.arun(write_manifest(tmp_path, 2), out=tmp_path / "out", fake=True)
    assert list(frame["status"]) == ["completed", "completed"]


def test_plan_gives_the_jobs(tmp_path):
    plan = runner.plan(write_manifest(tmp_path, 3, repeat=2))
    assert len(plan) == 6 and all(isinstance(job, runner.Job) for job in plan)


def test_results_parquet_has_real_types_and_metadata_points_at_the_images(tmp_path):
    out = tmp_path / "out"
    runner.run(write_manifest(tmp_path, 3), out=out, fake=True)
    schema = pq.read_schema(out / "results.parquet")
    assert str(schema.field("width").type) == "int64"
    assert str(schema.field("credits").type) == "double"
    assert str(schema.field("completed_at").type).startswith("timestamp")
    lines = (out / "metadata.jsonl").read_text().splitlines()
    import json

    names = [json.loads(line)["file_name"] for line in lines]
    assert len(names) == 3 and all((out / name).is_file() for name in names)


def test_hugging_face_imagefolder_loads_the_images_with_their_columns(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = tmp_path / "out"
    runner.run(write_manifest(tmp_path, 3, repeat=2), out=out, fake=True)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train")
    assert loaded.num_rows == 6
    assert {"image", "job_id", "prompt", "name", "sample"} <= set(loaded.column_names)
    assert loaded[0]["image"].size == (loaded[0]["width"], loaded[0]["height"])


def test_run_options_never_show_the_key():
    options = runner.RunOptions(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(options) and "sk-very-secret" not in str(options)
