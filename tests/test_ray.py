"""``--ray --shards N``: the shards as Ray tasks on a local Ray cluster, merged into --out."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

import runner

from conftest import FAST
from helpers import write_manifest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow
IDENTITY = ["job_id", "row", "sample", "prompt", "size", "quality", "status", "file"]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        env={**os.environ, "RAY_DISABLE_USAGE_STATS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ray_shards_give_the_results_of_one_run_and_a_rerun_sends_nothing(tmp_path, monkeypatch):
    manifest = write_manifest(tmp_path, 24)
    runner.run(manifest, out=tmp_path / "single", fake=True, timing=FAST)
    single = pd.read_parquet(tmp_path / "single" / "results.parquet")
    out = tmp_path / "ray-out"

    done = cli("run", str(manifest), "--fake", "--ray", "--shards", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "4 shards on Ray merged" in done.stderr
    merged = pd.read_parquet(out / "results.parquet")
    assert merged[IDENTITY].equals(single[IDENTITY])
    for file, sha in zip(merged["file"], merged["sha256"], strict=True):
        assert (out / file).is_file(), file
        assert runner.outputs.file_sha256(out / file) == sha
    entries = json.loads((out / "files.json").read_text())
    assert sorted(e["path"] for e in entries) == sorted(merged["file"])
    shard_ids = [
        job_id
        for k in range(4)
        for job_id in pd.read_csv(out / "shards" / f"{k}-of-4" / "results.csv")["job_id"]
    ]
    assert sorted(shard_ids) == sorted(single["job_id"])  # each job in exactly one shard
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    loaded = datasets.load_dataset(  # as the README says, without the shards' copies
        "imagefolder",
        data_files=[str(out / "metadata.jsonl"), str(out / "images" / "**")],
        split="train",
        cache_dir=str(tmp_path / "hf"),
    )
    assert sorted(loaded["job_id"]) == sorted(single["job_id"])

    again = cli("run", str(manifest), "--fake", "--ray", "--shards", "4", "--out", str(out))
    assert again.returncode == 0, again.stderr
    for k in range(4):
        info = json.loads((out / "shards" / f"{k}-of-4" / "run.json").read_text())
        assert info["latest"]["submissions"] == 0


def test_ray_refuses_selectors_and_shards_without_ray(tmp_path):
    manifest = write_manifest(tmp_path, 4)
    with_limit = cli("run", str(manifest), "--fake", "--ray", "--limit", "2")
    assert with_limit.returncode == 2 and "--ray runs the whole manifest" in with_limit.stderr
    without_ray = cli("run", str(manifest), "--fake", "--shards", "2")
    assert without_ray.returncode == 2 and "go with --ray" in without_ray.stderr
    assert not (tmp_path / "outputs").exists()


def test_ray_with_an_object_store_out_merges_in_the_store(tmp_path, local_s3):
    from runner.objectstore import ObjectStoreDir

    manifest = write_manifest(tmp_path, 12)
    url = local_s3.url("ray-run")
    done = cli("run", str(manifest), "--fake", "--ray", "--shards", "3", "--out", url)
    assert done.returncode == 0, done.stderr
    store = ObjectStoreDir(url)
    entries = json.loads(store.read_bytes("files.json") or b"")
    assert len(entries) == 12
    for entry in entries:
        assert store.size_of(entry["path"]) == entry["bytes"]
    assert len(store.sizes("shards")) > 12  # the shards' own dirs stay beside the merge


def test_ray_limits_are_for_the_whole_run_and_a_refused_key_stops_every_shard(tmp_path, loopback):
    from conftest import API_KEY

    manifest = write_manifest(tmp_path, 8)
    out = tmp_path / "o"
    done = cli(
        *("run", str(manifest), "--fake", "--ray", "--shards", "4", "--out", str(out)),
        *("--concurrency", "8", "--max-credits", "100"),
    )
    assert done.returncode == 0, done.stderr
    settings = json.loads((out / "shards" / "1-of-4" / "run.json").read_text())["latest"][
        "settings"
    ]
    assert settings["concurrency"] == 2 and settings["max_credits"] == 25

    server = loopback(api_key="sk-another-key", small_images=True)
    refused = cli(
        *("run", str(manifest), "--ray", "--shards", "2", "--base-url", server.url),
        *("--out", str(tmp_path / "refused")),
        EVOLINK_API_KEY=API_KEY,
    )
    assert refused.returncode == 3, refused.stderr
    assert re.search(r"shard \d: the API refused the run \(HTTP 401", refused.stderr)
    assert API_KEY not in refused.stderr
    assert server.fake.counts["submit_requests"] <= 2  # one probe per shard


def test_the_progress_bar_counts_every_job_even_before_every_shard_started():
    from runner.distributed import _follow
    from runner.progress import Reporter

    reports = iter([{}, {0: {"total": 5, "completed": 2}}, {0: {"total": 5, "completed": 5}}])
    seen: list[tuple[int, int]] = []

    class Board:
        class tallies:
            @staticmethod
            def remote() -> str:
                return "ref"

    class FakeRay:
        rounds = 3

        def wait(self, pending, num_returns, timeout):
            self.rounds -= 1
            return [], pending if self.rounds else []

        def get(self, ref):
            return next(reports)

    class Seeing(Reporter):
        def refresh(self) -> None:
            seen.append((self.tally.total, self.tally.finished))

    _follow(FakeRay(), ["a", "b"], Board(), Seeing(), total=10)
    assert seen[-3:] == [(10, 0), (10, 2), (10, 5)]
