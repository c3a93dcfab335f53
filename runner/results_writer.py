"""Writing a run's outputs a chunk of jobs at a time, so memory does not grow with the
manifest: results.csv appended, results.parquet in row groups, metadata.jsonl and
files.json appended, the gallery from the first jobs. Each file is written to a temp
name and replaces the old one at the end, only if its bytes differ (a rerun that did
nothing leaves the outputs as they were)."""

from __future__ import annotations

import filecmp
import json
import os
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .expand import Job, Plan
from .gallery import gallery_html
from .journal import JobRecord
from .outputs import (
    csv_bytes,
    files_entry,
    input_column_names,
    job_status,
    json_bytes,
    metadata_bytes,
    results_frame,
    write_if_changed,
)

CHUNK_JOBS = 20_000  # jobs per chunk: one Parquet row group, ~30 MB of rows in memory
GALLERY_MAX_CARDS = 5_000  # a page with more images is no use in a browser


def chunks(jobs: Iterable[Job], size: int | None = None) -> Iterator[list[Job]]:
    iterator = iter(jobs)
    while chunk := list(islice(iterator, size or CHUNK_JOBS)):
        yield chunk


class ResultsWriter:
    """Takes the results chunk by chunk: a run's jobs with their journal records
    (``add_jobs``), or rows of earlier tables (``add_frame``, for merge); ``finish``
    writes run.json and the gallery and puts every file in place."""

    def __init__(
        self,
        out_dir: Path,
        title: str,
        columns: Sequence[str],
        matrix: Sequence[str],
        *,
        selected: frozenset[str] | None = None,
        keep_frame: bool = True,
    ) -> None:
        """``columns``/``matrix``: the input columns and matrix keys as the table names
        them; ``selected``: job ids counted apart (the exit code speaks of them)."""
        self.out_dir, self.title, self.selected = out_dir, title, selected
        self.columns, self.matrix = list(columns), list(matrix)
        self.counts = {"jobs": 0, "completed": 0, "failed": 0, "pending": 0}
        self.selected_counts = dict(self.counts)
        self.credits = 0.0
        self._frames: list[pd.DataFrame] | None = [] if keep_frame else None
        self._gallery: list[pd.DataFrame] = []
        self._gallery_rows = 0
        self._schema: pa.Schema | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._files_count = 0
        self._handles: dict[str, BinaryIO] = {
            name: self._temp(name).open("wb")
            for name in ("results.csv", "results.parquet", "files.json", "metadata.jsonl")
        }
        self._handles["files.json"].write(b"[")

    @classmethod
    def for_plan(
        cls,
        out_dir: Path,
        plan: Plan,
        selected: frozenset[str] | None = None,
        keep_frame: bool = True,
    ) -> ResultsWriter:
        names = input_column_names(plan)
        return cls(
            out_dir,
            plan.name,
            [names[c] for c in plan.columns],
            [names[k] for k in plan.matrix_keys],
            selected=selected,
            keep_frame=keep_frame,
        )

    def add_jobs(self, plan: Plan, jobs: Sequence[Job], records: Mapping[str, JobRecord]) -> None:
        """A chunk of a run's jobs, with the journal's records of them."""
        done = [records[j.job_id] for j in jobs if job_status(records.get(j.job_id)) == "completed"]
        self.add_frame(
            results_frame(plan, records, jobs),
            [files_entry(record) for record in done],
            sum(record.credits_total for record in records.values()),
        )

    def add_frame(
        self, frame: pd.DataFrame, entries: Sequence[dict[str, Any]], credits: float
    ) -> None:
        """A chunk of the results table (typed as ``results_frame`` types it), the
        files.json entries of its completed jobs and the credits they reserved."""
        csv = csv_bytes(frame)
        if self.counts["jobs"]:
            csv = csv.split(b"\n", 1)[1]  # the header once
        self._handles["results.csv"].write(csv)
        self._write_parquet(frame)
        self._handles["metadata.jsonl"].write(metadata_bytes(frame))
        statuses = frame["status"]
        self._count(self.counts, statuses)
        if self.selected is not None:
            self._count(self.selected_counts, statuses[frame["job_id"].isin(self.selected)])
        self.credits += credits
        for entry in entries:
            self._write_files_entry(entry)
        if self._gallery_rows < GALLERY_MAX_CARDS:
            head = frame.iloc[: GALLERY_MAX_CARDS - self._gallery_rows]
            self._gallery.append(head)
            self._gallery_rows += len(head)
        if self._frames is not None:
            self._frames.append(frame)

    def summary(self) -> dict[str, Any]:
        """Counts and credits over the jobs shown, as run.json and the summary show them."""
        return {**self.counts, "credits_reserved": round(self.credits, 4)}

    def finish(self, run_info: dict[str, Any]) -> pd.DataFrame | None:
        """Close and put every output in place; returns the results table (None unless
        asked to keep it: the command line only needs the counts)."""
        if self._schema is None:
            raise ValueError("no rows were added, not even an empty table")
        self._handles["files.json"].write(b"\n]\n" if self._files_count else b"]\n")
        if self._parquet is not None:
            self._parquet.close()
        for name, handle in self._handles.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            self._put_in_place(name)
        write_if_changed(self.out_dir / "run.json", json_bytes(run_info))
        head = pd.concat(self._gallery, ignore_index=True)
        page = gallery_html(self.title, head, self.columns, self.matrix, total=self.counts["jobs"])
        write_if_changed(self.out_dir / "gallery.html", page.encode("utf-8"))
        if self._frames is None:
            return None
        if len(self._frames) == 1:
            return self._frames[0]
        return pd.concat(self._frames, ignore_index=True)

    def abort(self) -> None:
        """Close and remove the temp files (an error before ``finish``)."""
        if self._parquet is not None:
            self._parquet.close()
        for name, handle in self._handles.items():
            handle.close()
            self._temp(name).unlink(missing_ok=True)

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        if self._schema is None:
            self._schema = _schema_of(frame)
            self._parquet = pq.ParquetWriter(self._handles["results.parquet"], self._schema)
        table = pa.Table.from_pandas(frame, schema=self._schema, preserve_index=False)
        assert self._parquet is not None
        self._parquet.write_table(table)

    def _write_files_entry(self, entry: dict[str, Any]) -> None:
        text = json.dumps(entry, indent=2, ensure_ascii=False, default=str)
        lead = b"\n" if self._files_count == 0 else b",\n"
        self._handles["files.json"].write(lead + textwrap.indent(text, "  ").encode("utf-8"))
        self._files_count += 1

    @staticmethod
    def _count(counts: dict[str, int], statuses: pd.Series) -> None:
        counts["jobs"] += len(statuses)
        for status, number in statuses.value_counts().items():
            counts[str(status)] = counts.get(str(status), 0) + int(number)

    def _temp(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp"

    def _put_in_place(self, name: str) -> None:
        temp, final = self._temp(name), self.out_dir / name
        if final.is_file() and filecmp.cmp(temp, final, shallow=False):
            temp.unlink()
            return
        os.replace(temp, final)


def _schema_of(frame: pd.DataFrame) -> pa.Schema:
    """The Parquet schema every row group shares: inferred from the first chunk, with
    columns that were all empty there typed as text, and without pandas' metadata (the
    table reads the same everywhere)."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    fields = [
        pa.field(field.name, pa.string()) if pa.types.is_null(field.type) else field
        for field in schema
    ]
    return pa.schema(fields)
