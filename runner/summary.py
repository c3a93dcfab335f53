"""What people read: the plan before a run, the summary after it, ``report`` later."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import OutputDirError
from .expand import JobList, Plan
from .journal import FILENAME as JOURNAL
from .journal import read_states
from .objectstore import ObjectStoreDir, is_url, local_path, read_output

FIRST_PROMPTS = 5


def plan_summary(
    plan: Plan, out_dir: str | Path | None = None, selected: JobList | None = None
) -> dict[str, Any]:
    """The plan as data (``plan --json``): counts, credits, ids, first rendered prompts.
    ``jobs`` counts what would run (the selection, if any); ``manifest_jobs`` all jobs."""
    jobs = plan.all if selected is None else selected
    summary: dict[str, Any] = {
        "name": plan.name,
        "manifest": str(plan.loaded.path),
        "jobs": len(jobs),
        "manifest_jobs": len(plan),
        "expanded": plan.expanded,
        "duplicates_merged": plan.expanded - len(plan),
        "unique_requests": plan.unique_requests(),
        "estimated_credits": jobs.credits,
        "pricing": plan.loaded.manifest.price_table(),
        "columns": list(plan.columns),
        "matrix": {k: list(v) for k, v in plan.loaded.manifest.matrix.items()},
        "first_prompts": [
            {
                "job_id": job.job_id,
                "row": job.row,
                "sample": job.sample,
                "matrix": dict(job.matrix),
                "prompt": job.prompt,
                "size": job.size,
                "quality": job.quality,
                "file": job.path,
            }
            for job in jobs.head[:FIRST_PROMPTS]
        ],
        "job_ids": jobs.ids,
    }
    if out_dir is not None:
        summary["out_dir"] = str(out_dir)
        states = _states(out_dir)
        if states is not None:
            summary["existing"] = _against_dir(plan, jobs.ids, states)
    return summary


def _states(location: str | Path) -> dict[str, str] | None:
    if not is_url(location):
        return read_states(local_path(location))
    with tempfile.TemporaryDirectory() as folder:
        if not ObjectStoreDir(str(location)).download(JOURNAL, Path(folder) / JOURNAL):
            return None
        return read_states(Path(folder))


def _against_dir(plan: Plan, ids: Sequence[str], states: dict[str, str]) -> dict[str, int]:
    """Split the selected jobs by what the output dir already holds. An edited job is one
    to run (its new request) and one dropped (the old one, no longer in the manifest)."""
    done = sum(1 for job_id in ids if states.get(job_id) == "completed")
    failed = sum(1 for job_id in ids if states.get(job_id) == "failed")
    in_manifest = plan.id_set()
    return {
        "to_run": len(ids) - done - failed,
        "done": done,
        "failed": failed,
        "dropped": sum(1 for job_id in states if job_id not in in_manifest),
    }


def print_plan(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"plan: {summary['name']}", show_header=False, title_justify="left")
    table.add_row("jobs", str(summary["jobs"]))
    if summary["jobs"] != summary["manifest_jobs"]:
        table.add_row("jobs in the manifest", str(summary["manifest_jobs"]))
    if summary["duplicates_merged"]:
        table.add_row("identical jobs merged", str(summary["duplicates_merged"]))
    table.add_row("unique requests", str(summary["unique_requests"]))
    table.add_row("estimated credits", f"{summary['estimated_credits']:g}")
    if summary.get("out_dir"):
        table.add_row("output dir", summary["out_dir"])
    for key, value in (summary.get("existing") or {}).items():
        table.add_row(f"  {key.replace('_', ' ')}", str(value))
    console.print(table)
    for item in summary["first_prompts"]:
        matrix = " ".join(f"{k}={v}" for k, v in item["matrix"].items())
        console.print(
            f"[dim]{item['job_id']} row {item['row']} sample {item['sample']} "
            f"{matrix} {item['size'] or ''} {item['quality'] or ''}[/]"
        )
        console.print(f"  {item['prompt']}", markup=False)


def print_run_summary(console: Console, out_dir: str | Path) -> dict[str, Any]:
    """The end-of-run table, from run.json (a run's, or a merge's); returns run.json."""
    info = _run_json(out_dir)
    totals, latest = info["totals"], info.get("latest")
    table = Table(title=f"runner: {info['name']}", show_header=False, title_justify="left")
    table.add_row("jobs", str(totals["jobs"]))
    table.add_row("completed", f"[green]{totals['completed']}[/]")
    table.add_row("failed", f"[red]{totals['failed']}[/]" if totals["failed"] else "0")
    table.add_row("pending", str(totals["pending"]))
    if latest is not None:
        table.add_row(
            "this run",
            f"{latest['submissions']} submitted, {latest['retries']} retries, "
            f"{latest['duration_s']:.1f} s ({latest['outcome']})",
        )
    if "merged_from" in info:
        table.add_row(
            "merged from",
            f"{len(info['merged_from'])} dirs ({totals.get('duplicates', 0)} jobs present "
            f"twice, {totals.get('missing', 0)} missing)",
        )
    estimate = totals.get("estimated_credits")
    reserved = f"{totals['credits_reserved']:g}"
    table.add_row(
        "credits reserved",
        reserved if estimate is None else f"{reserved} (estimate for all jobs: {estimate:g})",
    )
    table.add_row("outputs", str(out_dir))
    console.print(table)
    return info


def _run_json(out_dir: str | Path) -> dict[str, Any]:
    data = read_output(out_dir, "run.json")
    if data is None:
        raise OutputDirError(f"{out_dir} holds no run (no run.json)")
    try:
        return dict(json.loads(data))
    except ValueError as error:
        raise OutputDirError(f"{out_dir}/run.json: unreadable: {error}") from None
