"""``runner merge``: several output dirs of one manifest (its shards, say) into one
self-contained output dir with the layout of a single run: images hard-linked (or
copied) into it, the tables, files.json, metadata.jsonl, gallery and run.json written
again, and a journal rebuilt, so a later ``runner run`` resumes from it. Inputs and the
merged dir may be local dirs or object-store URLs (the merged tables are then written in
a local temp dir and uploaded; images are copied inside the store)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from . import __version__ as VERSION
from .errors import OutputDirError
from .expand import plan_file
from .gallery import gallery_html
from .journal import FILENAME as JOURNAL
from .journal import JobRecord, Journal
from .objectstore import ObjectStoreDir, is_url, local_path, read_output
from .outputs import (
    OUTPUT_FILES,
    RESULT_COLUMNS,
    csv_bytes,
    json_bytes,
    metadata_bytes,
    parquet_bytes,
    result_column_name,
    write_if_changed,
)


@dataclass
class MergeReport:
    """What a merge found."""

    out: str | Path
    jobs: int = 0
    completed: int = 0
    duplicates: list[str] = field(default_factory=list)  # job ids found in several inputs
    missing: list[str] = field(default_factory=list)  # in the manifest, in no input


def merge_runs(
    inputs: Sequence[str | Path], out: str | Path, manifest: str | Path | None = None
) -> MergeReport:
    """Merge ``inputs`` into ``out``; raises OutputDirError for unusable inputs."""
    runs = [_load(location) for location in inputs]
    if not is_url(out):
        return _merge(runs, local_path(out), manifest, None)
    store = ObjectStoreDir(str(out))
    store.acquire_lock()
    try:
        with tempfile.TemporaryDirectory(prefix="runner-merge-") as staging:
            report = _merge(runs, Path(staging), manifest, store)
            for name in (*OUTPUT_FILES, JOURNAL):
                store.upload(Path(staging) / name, name)
        report.out = store.url
        return report
    finally:
        store.release_lock()


def _merge(
    runs: Sequence[_Input],
    out: Path,
    manifest: str | Path | None,
    store: ObjectStoreDir | None,
) -> MergeReport:
    names = {run.info["name"] for run in runs}
    if len(names) != 1:
        raise OutputDirError(f"the inputs hold runs of different manifests: {sorted(names)}")
    name = names.pop()
    out.mkdir(parents=True, exist_ok=True)
    report = MergeReport(out)
    stacked = pd.concat(
        [run.frame.assign(_source=index) for index, run in enumerate(runs)],
        ignore_index=True,
    )
    counts = stacked["job_id"].value_counts()
    report.duplicates = sorted(counts[counts > 1].index)
    # one row per job: a completed copy first, else the first input's
    stacked["_rank"] = (stacked["status"] != "completed").astype(int)
    merged = stacked.sort_values(["_rank", "_source"], kind="stable").drop_duplicates("job_id")
    chosen = dict(zip(merged["job_id"], merged["_source"], strict=True))
    merged = merged.drop(columns=["_rank", "_source"])
    if manifest is not None:
        plan = plan_file(manifest)
        order = {job_id: i for i, job_id in enumerate(plan.job_ids)}
        present = set(merged["job_id"])
        report.missing = [job_id for job_id in plan.job_ids if job_id not in present]
        merged = merged[merged["job_id"].isin(order)]
        merged = merged.iloc[merged["job_id"].map(order).argsort()]
    else:
        merged = merged.sort_values(["row", "sample", "job_id"])
    merged = merged.reset_index(drop=True)
    kept = set(merged["job_id"])
    files = [
        entry
        for index, run in enumerate(runs)
        for entry in run.files
        if entry["job_id"] in kept and chosen.get(entry["job_id"]) == index
    ]
    for entry in files:
        _place(runs[chosen[entry["job_id"]]], entry, out, store)
    sources = {str(run.location): run.info.get("totals", {}) for run in runs}
    report.jobs = len(merged)
    report.completed = int((merged["status"] == "completed").sum())
    _write(out, name, merged, files, runs, sources, report)
    _rebuild_journal(out, name, merged, files)
    return report


class _Input(NamedTuple):
    """One output dir being merged."""

    location: str | Path
    store: ObjectStoreDir | None  # when the input is in an object store
    frame: pd.DataFrame
    info: dict[str, Any]  # its run.json
    files: list[dict[str, Any]]  # its files.json


def _load(location: str | Path) -> _Input:
    store = ObjectStoreDir(str(location)) if is_url(location) else None
    try:
        parts = [read_output(location, name) for name in _NEEDED]
        if any(part is None for part in parts):
            missing = [name for name, part in zip(_NEEDED, parts, strict=True) if part is None]
            raise OutputDirError(f"{location} holds no complete run (no {', '.join(missing)})")
        table, info, entries = parts
        frame = pd.read_parquet(io.BytesIO(table or b""))
        return _Input(location, store, frame, json.loads(info or b""), json.loads(entries or b""))
    except (OSError, ValueError) as error:
        raise OutputDirError(f"{location} holds no complete run: {error}") from None


_NEEDED = ("results.parquet", "run.json", "files.json")


def _place(run: _Input, entry: dict[str, Any], out: Path, store: ObjectStoreDir | None) -> None:
    """Put one image into the merged dir: hard-linked (or copied) between local dirs,
    downloaded from a store, or copied inside one; an image already there is kept."""
    relative, size = str(entry["path"]), entry.get("bytes")
    if store is not None:
        if store.size_of(relative) == size:
            return
        if run.store is None:
            store.upload(local_path(run.location) / relative, relative)
        else:
            store.copy_from(run.store, relative)
        return
    target = out / relative
    if run.store is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        present = target.is_file() and target.stat().st_size == size
        if not present and not run.store.download(relative, target):
            raise OutputDirError(f"{run.location}/{relative} is listed but not there")
        return
    _link(local_path(run.location) / relative, target)


def _link(source: Path, target: Path) -> None:
    """Hard-link the image into the merged dir (copy across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if os.path.samefile(source, target):
            return  # already linked by an earlier merge
        target.unlink()  # another image by that name: replace it
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write(
    out: Path,
    name: str,
    frame: pd.DataFrame,
    files: list[dict[str, Any]],
    runs: Sequence[_Input],
    sources: dict[str, Any],
    report: MergeReport,
) -> None:
    write_if_changed(out / "results.csv", csv_bytes(frame))
    write_if_changed(out / "results.parquet", parquet_bytes(frame))
    write_if_changed(out / "files.json", json_bytes(files))
    write_if_changed(out / "metadata.jsonl", metadata_bytes(frame))
    resolved = runs[0].info.get("resolved_manifest") or {}
    matrix_keys = list(resolved.get("matrix") or {})
    matrix = [result_column_name(k) for k in matrix_keys]
    columns = [c for c in frame.columns if c not in RESULT_COLUMNS and c not in matrix]
    page = gallery_html(name, frame, columns, matrix)
    write_if_changed(out / "gallery.html", page.encode("utf-8"))
    counts = frame["status"].value_counts().to_dict()
    info = {
        "runner_version": VERSION,
        "name": name,
        "merged_from": sources,
        "resolved_manifest": resolved,
        "totals": {
            "jobs": len(frame),
            "completed": int(counts.get("completed", 0)),
            "failed": int(counts.get("failed", 0)),
            "pending": int(counts.get("pending", 0)),
            "credits_reserved": float(frame["credits"].fillna(0).sum()),
            "duplicates": len(report.duplicates),
            "missing": len(report.missing),
        },
    }
    write_if_changed(out / "run.json", json_bytes(info))


def _rebuild_journal(
    out: Path, name: str, frame: pd.DataFrame, files: list[dict[str, Any]]
) -> None:
    by_job = {entry["job_id"]: entry for entry in files}
    with Journal.open(out) as journal:
        journal.claim(name, out)
        for row in frame.to_dict("records"):
            status = str(row["status"])
            if status == "pending":
                continue
            entry = by_job.get(str(row["job_id"]), {})
            journal.put(
                JobRecord(
                    job_id=str(row["job_id"]),
                    state=status,
                    attempts=int(row["attempts"] or 0),
                    task_id=_value(row.get("task_id")),
                    submitted_at=_epoch(row.get("submitted_at")),
                    completed_at=_epoch(row.get("completed_at")),
                    result_url=entry.get("source_url"),
                    credits=_value(row.get("credits")),
                    credits_total=float(_value(row.get("credits")) or 0.0),
                    error=_value(row.get("error")),
                    file=_value(row.get("file")),
                    sha256=_value(row.get("sha256")),
                    width=_int(row.get("width")),
                    height=_int(row.get("height")),
                    bytes=_int(row.get("bytes")),
                    media_type=entry.get("media_type"),
                )
            )


def _value(value: Any) -> Any:
    return None if value is None or value is pd.NA or pd.isna(value) else value


def _int(value: Any) -> int | None:
    value = _value(value)
    return None if value is None else int(value)


def _epoch(value: Any) -> float | None:
    value = _value(value)
    return None if value is None else pd.Timestamp(value).timestamp()
