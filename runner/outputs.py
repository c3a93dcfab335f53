"""Outputs derived from the plan and the journal: results.csv/.parquet, files.json,
metadata.jsonl and run.json. Each is written atomically, and only when it changed,
so a rerun that did nothing leaves the files as they were."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .expand import Job, Plan
from .journal import JobRecord

RESULT_COLUMNS = (
    "job_id",
    "row",
    "sample",
    "prompt",
    "size",
    "quality",
    "status",
    "task_id",
    "attempts",
    "error",
    "credits",
    "submitted_at",
    "completed_at",
    "duration_s",
    "file",
    "sha256",
    "width",
    "height",
    "bytes",
)
INT_COLUMNS = ("row", "sample", "attempts", "width", "height", "bytes")
FLOAT_COLUMNS = ("credits", "duration_s")
TIME_COLUMNS = ("submitted_at", "completed_at")


def result_column_name(key: str) -> str:
    """An input column's or matrix key's name in the results (``input_<name>`` on a clash)."""
    return f"input_{key}" if key in RESULT_COLUMNS else key


def input_column_names(plan: Plan) -> dict[str, str]:
    """Input columns and matrix keys → their names in the results."""
    return {key: result_column_name(key) for key in (*plan.columns, *plan.matrix_keys)}


def job_status(record: JobRecord | None) -> str:
    if record is None:
        return "pending"
    if record.state in ("completed", "failed"):
        return record.state
    return "pending"


def results_frame(
    plan: Plan, records: Mapping[str, JobRecord], jobs: Sequence[Job] | None = None
) -> pd.DataFrame:
    """One row per job, in plan order, typed (numbers as numbers, times as timestamps)."""
    names = input_column_names(plan)
    chosen = plan.jobs if jobs is None else jobs  # an empty selection shows no jobs
    rows = [_result_row(job, records.get(job.job_id), names) for job in chosen]
    order = [*RESULT_COLUMNS[:3], *names.values(), *RESULT_COLUMNS[3:]]
    frame = pd.DataFrame(rows, columns=order)
    for column in INT_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    for column in FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column]).astype("Float64")
    for column in TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    for column in names.values():
        frame[column] = _uniform(frame[column])
    return frame


def _result_row(job: Job, record: JobRecord | None, names: Mapping[str, str]) -> dict[str, Any]:
    status = job_status(record)
    row: dict[str, Any] = {
        "job_id": job.job_id,
        "row": job.row,
        "sample": job.sample,
        "prompt": job.prompt,
        "size": job.size,
        "quality": job.quality,
        "status": status,
        "task_id": record.task_id if record else None,
        "attempts": record.attempts if record else 0,
        "error": record.error if record and status == "failed" else None,
        "credits": record.credits if record else None,
        "submitted_at": record.submitted_at if record else None,
        **_file_fields(record if status == "completed" else None),
    }
    for key, value in {**job.columns, **job.matrix}.items():
        row[names[key]] = value
    return row


def _file_fields(record: JobRecord | None) -> dict[str, Any]:
    """The columns only a completed job has (empty otherwise)."""
    if record is None:
        return dict.fromkeys(_FILE_COLUMNS)
    return {
        "completed_at": record.completed_at,
        "duration_s": _duration(record),
        "file": record.file,
        "sha256": record.sha256,
        "width": record.width,
        "height": record.height,
        "bytes": record.bytes,
    }


_FILE_COLUMNS = ("completed_at", "duration_s", "file", "sha256", "width", "height", "bytes")


def _duration(record: JobRecord) -> float | None:
    end = record.finished_at or record.completed_at
    if record.submitted_at is None or end is None:
        return None
    return round(max(0.0, end - record.submitted_at), 3)


def _uniform(series: pd.Series) -> pd.Series:
    """Inline rows keep YAML types; a column of mixed types becomes text (Parquet needs one)."""
    kinds = {type(v) for v in series if v is not None and not (isinstance(v, float) and pd.isna(v))}
    if len(kinds) <= 1 and not (kinds & {list, dict}):
        return series
    return series.map(
        lambda v: (
            None
            if v is None
            else (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v))
        )
    )


OUTPUT_FILES = (
    "results.csv",
    "results.parquet",
    "files.json",
    "metadata.jsonl",
    "run.json",
    "gallery.html",
)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    text = frame.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    return text.encode("utf-8")


def files_entry(record: JobRecord) -> dict[str, Any]:
    """One completed job's entry in files.json."""
    return {
        "job_id": record.job_id,
        "path": record.file,
        "sha256": record.sha256,
        "bytes": record.bytes,
        "width": record.width,
        "height": record.height,
        "media_type": record.media_type,
        "task_id": record.task_id,
        "source_url": record.result_url,
    }


def metadata_bytes(frame: pd.DataFrame) -> bytes:
    """Hugging Face ``imagefolder`` metadata: ``file_name`` + columns, completed jobs only."""
    done = frame[frame["status"] == "completed"]
    lines = []
    for record in json.loads(done.to_json(orient="records", date_format="iso") or "[]"):
        record.pop("status", None)
        record.pop("error", None)
        lines.append(json.dumps({"file_name": record.pop("file"), **record}, ensure_ascii=False))
    return ("\n".join(lines) + "\n" if lines else "").encode("utf-8")


def json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace ``path`` with ``data`` unless it already holds exactly that."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return True


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
