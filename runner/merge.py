"""``runner merge``: several output dirs of one manifest (its shards, say) into one
self-contained output dir with the layout of a single run: images hard-linked (or
copied) into it, the tables, files.json, metadata.jsonl, gallery and run.json written
again, and a journal made of the inputs' journal records, so a later ``runner run``
resumes from it. Inputs and the merged dir may be local dirs or object-store URLs (the
merged tables are then written in a local temp dir and uploaded; images are copied
inside the store).

Memory stays flat: the inputs' tables are held in Arrow's compact form, a copy is chosen
per job from two columns, and the merged dir is written a chunk of jobs at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__ as VERSION
from .errors import OutputDirError
from .expand import Plan, plan_file
from .journal import FILENAME as JOURNAL
from .journal import Journal
from .objectstore import ObjectStoreDir, is_url, local_path
from .outputs import OUTPUT_FILES, RESULT_COLUMNS, files_entry, result_column_name
from .results_writer import CHUNK_JOBS, ResultsWriter

NEEDED = ("results.parquet", "run.json", JOURNAL)
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype()}


@dataclass
class MergeReport:
    """What a merge found."""

    out: str | Path
    jobs: int = 0
    completed: int = 0
    duplicates: list[str] = field(default_factory=list)  # job ids found in several inputs
    missing: list[str] = field(default_factory=list)  # in the manifest, in no input


class _Input(NamedTuple):
    """One output dir being merged."""

    location: str | Path
    store: ObjectStoreDir | None  # when the input is in an object store
    table: pa.Table  # its results.parquet
    info: dict[str, Any]  # its run.json
    journal: Journal  # read-only


def merge_runs(
    inputs: Sequence[str | Path],
    out: str | Path,
    manifest: str | Path | None = None,
    *,
    plan: Plan | None = None,
) -> MergeReport:
    """Merge ``inputs`` into ``out``, in the order of ``manifest`` (or of its ``plan``,
    when the caller has one: that saves a pass over its rows); raises OutputDirError for
    unusable inputs."""
    # the plan first: its pass over the rows is the peak, before any table is read
    order = _plan_order(manifest, plan)
    with tempfile.TemporaryDirectory(prefix="runner-merge-") as scratch:
        runs: list[_Input] = []
        try:
            for index, location in enumerate(inputs):
                runs.append(_open(location, Path(scratch) / f"input-{index}"))
            if not is_url(out):
                return _merge(runs, local_path(out), order, None)
            return _merge_into_store(runs, str(out), order, Path(scratch) / "out")
        finally:
            for run in runs:
                run.journal.close()


def _merge_into_store(
    runs: Sequence[_Input], url: str, order: pa.Array | None, staging: Path
) -> MergeReport:
    store = ObjectStoreDir(url)
    store.acquire_lock()
    try:
        report = _merge(runs, staging, order, store)
        for name in (*OUTPUT_FILES, JOURNAL):
            store.upload(staging / name, name)
        report.out = store.url
        return report
    finally:
        store.release_lock()


def _open(location: str | Path, scratch: Path) -> _Input:
    store = ObjectStoreDir(str(location)) if is_url(location) else None
    folder = local_path(location)
    if store is not None:
        folder = scratch
        folder.mkdir(parents=True)
        for name in NEEDED:
            store.download(name, folder / name)
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing:
        raise OutputDirError(f"{location} holds no complete run (no {', '.join(missing)})")
    try:
        table = pq.read_table(folder / "results.parquet")
        info = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        journal = Journal(folder / JOURNAL, read_only=True)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise OutputDirError(f"{location} holds no complete run: {error}") from None
    return _Input(location, store, table, info, journal)


def _merge(
    runs: Sequence[_Input],
    out: Path,
    order: pa.Array | None,
    store: ObjectStoreDir | None,
) -> MergeReport:
    """``order``: the manifest's job ids in plan order (None: by row and sample)."""
    names = {run.info["name"] for run in runs}
    if len(names) != 1:
        raise OutputDirError(f"the inputs hold runs of different manifests: {sorted(names)}")
    name = names.pop()
    out.mkdir(parents=True, exist_ok=True)
    report = MergeReport(out)
    choice = _choose(runs, report)
    if order is not None:
        choice = _in_plan_order(choice, order, report)
    else:
        choice = choice.sort_values(["row", "sample", "job_id"], kind="stable")
    resolved = runs[0].info.get("resolved_manifest") or {}
    matrix = [result_column_name(k) for k in resolved.get("matrix") or {}]
    columns = [c for c in runs[0].table.column_names if c not in RESULT_COLUMNS]
    inputs = [c for c in columns if c not in matrix]
    writer = ResultsWriter(out, name, inputs, matrix, keep_frame=False)
    building = out / f".{JOURNAL}.merging"
    building.unlink(missing_ok=True)
    try:
        with Journal(building) as journal:
            journal.claim(name, out if store is None else store.url)
            for start in range(0, len(choice), CHUNK_JOBS):
                part = choice.iloc[start : start + CHUNK_JOBS]
                _merge_chunk(runs, part, writer, journal, out, store)
            if not writer.counts["jobs"]:
                writer.add_frame(_typed(runs[0].table.schema.empty_table()), [], 0.0)
        for suffix in ("-wal", "-shm"):
            (out / (JOURNAL + suffix)).unlink(missing_ok=True)
        os.replace(building, out / JOURNAL)
    except BaseException:
        writer.abort()
        building.unlink(missing_ok=True)
        raise
    report.jobs, report.completed = writer.counts["jobs"], writer.counts["completed"]
    writer.finish(_run_info(name, runs, resolved, writer, report))
    return report


def _plan_order(manifest: str | Path | None, plan: Plan | None) -> pa.Array | None:
    """The manifest's job ids in plan order, as a compact Arrow array."""
    if plan is None:
        if manifest is None:
            return None
        plan = plan_file(manifest)
    return pa.array(plan.job_ids, type=pa.string())


def _choose(runs: Sequence[_Input], report: MergeReport) -> pd.DataFrame:
    """One row per job: which input's copy (a completed one first, else the first
    input's) and where it is in that input's table. Notes the jobs present twice.
    Job ids stay Arrow strings (20 bytes each, not 70)."""
    parts = []
    for source, run in enumerate(runs):
        part = run.table.select(["job_id", "status", "row", "sample"])
        part = part.to_pandas(types_mapper=pd.ArrowDtype)
        part["_source"], part["_index"] = source, np.arange(len(part))
        parts.append(part)
    stacked = pd.concat(parts, ignore_index=True)
    del parts
    counts = stacked["job_id"].value_counts()
    report.duplicates = sorted(str(job_id) for job_id in counts[counts > 1].index)
    stacked["_rank"] = (stacked["status"] != "completed").astype(np.int8)
    ranked = stacked.sort_values(["_rank", "_source"], kind="stable")
    return ranked.drop_duplicates("job_id").drop(columns=["_rank", "status"])


def _in_plan_order(choice: pd.DataFrame, order: pa.Array, report: MergeReport) -> pd.DataFrame:
    """The jobs of the manifest in its order; reports those no input has."""
    ids = pa.array(choice["job_id"])
    report.missing = order.filter(pc.invert(pc.is_in(order, value_set=ids))).to_pylist()
    position = pc.index_in(ids, value_set=order)
    kept = choice[pc.is_valid(position).to_numpy(zero_copy_only=False)]
    return kept.iloc[np.argsort(pc.drop_null(position).to_numpy(), kind="stable")]


def _merge_chunk(
    runs: Sequence[_Input],
    part: pd.DataFrame,
    writer: ResultsWriter,
    journal: Journal,
    out: Path,
    store: ObjectStoreDir | None,
) -> None:
    """Rows, records and images of one chunk of the merged jobs, in the merged order."""
    tables, records, where = [], {}, {}
    for source in sorted(set(part["_source"])):
        group, run = part[part["_source"] == source], runs[source]
        tables.append(run.table.take(pa.array(group["_index"].to_numpy())))
        records.update(run.journal.records_of(list(group["job_id"])))
        where.update(dict.fromkeys(group["job_id"], run))
    rows = pa.concat_tables(tables, promote_options="permissive")
    position = {job_id: i for i, job_id in enumerate(part["job_id"])}
    order = np.argsort([position[job_id] for job_id in rows.column("job_id").to_pylist()])
    frame = _typed(rows.take(pa.array(order)))
    entries = []
    for job_id, status in zip(frame["job_id"], frame["status"], strict=True):
        record = records.get(job_id)
        if record is None or status == "pending":
            continue
        journal.put(record)
        if status == "completed" and record.state == "completed":
            entry = files_entry(record)
            _place(where[job_id], entry, out, store)
            entries.append(entry)
    writer.add_frame(frame, entries, sum(r.credits_total for r in records.values()))


def _typed(table: pa.Table) -> pd.DataFrame:
    """An Arrow results table as ``results_frame`` types it (nullable ints and floats)."""
    return table.to_pandas(types_mapper=_NULLABLE.get)


def _run_info(
    name: str,
    runs: Sequence[_Input],
    resolved: dict[str, Any],
    writer: ResultsWriter,
    report: MergeReport,
) -> dict[str, Any]:
    return {
        "runner_version": VERSION,
        "name": name,
        "merged_from": {str(run.location): run.info.get("totals", {}) for run in runs},
        "resolved_manifest": resolved,
        "totals": {
            **writer.summary(),
            "duplicates": len(report.duplicates),
            "missing": len(report.missing),
        },
    }


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
