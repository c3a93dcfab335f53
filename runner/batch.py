"""The library API: plan a manifest, run it into an output dir, get the results table.

The CLI is a thin layer over ``plan_file``, ``run`` and ``arun``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pandas as pd

from . import __version__ as VERSION
from .download import remove_partial_files
from .engine import Engine, Settings
from .errors import MissingApiKey, OutputDirError, RunAborted, RunInterrupted
from .evolink import DEFAULT_BASE_URL, EvolinkClient
from .expand import Job, Plan
from .fake import FakeOptions, create_app
from .journal import Journal, iso
from .manifest import LoadedManifest
from .mirror import SYNC_INTERVAL_S, Mirror
from .objectstore import is_url, local_path
from .outputs import OUTPUT_FILES, file_sha256
from .policy import Timing
from .progress import Reporter
from .results_writer import ResultsWriter, chunks
from .select import selection_from_options

LOCK_NAME = ".runner.lock"
FAKE_BASE_URL = "http://fake-evolink.local"


@dataclass
class RunOptions:
    """Everything about a run besides the manifest; the CLI fills it from its flags."""

    out: str | Path | None = None
    base_url: str | None = None
    fake: bool = False
    fake_options: FakeOptions | None = None
    transport: httpx.AsyncBaseTransport | None = None
    api_key: str | None = field(default=None, repr=False)  # never in a repr
    concurrency: int | None = None
    rate: float | None = None
    max_attempts: int | None = None
    task_timeout: float | None = None
    retry_failed: bool = False
    max_credits: float | None = None
    timing: Timing = field(default_factory=Timing)
    reporter: Reporter | None = None
    handle_signals: bool = True
    shards: int = 1  # the manifest's limits are shared by this many shards
    sync_interval: float = SYNC_INTERVAL_S  # object-store outputs: seconds between uploads
    keep_frame: bool = True  # return the results table (the CLI needs only the counts)


def run(
    path: str | Path,
    out: str | Path | None = None,
    base_url: str | None = None,
    fake: bool = False,
    **options: Any,
) -> pd.DataFrame | None:
    """Run a manifest and return the results table (one row per job)."""
    return anyio.run(_arun_kwargs, path, out, base_url, fake, options)


async def _arun_kwargs(
    path: str | Path,
    out: str | Path | None,
    base_url: str | None,
    fake: bool,
    options: dict[str, Any],
) -> pd.DataFrame | None:
    return await arun(path, out=out, base_url=base_url, fake=fake, **options)


async def arun(
    path: str | Path,
    out: str | Path | None = None,
    base_url: str | None = None,
    fake: bool = False,
    *,
    rows: str | None = None,
    only: Sequence[str] | None = None,
    where: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    shard: str | None = None,
    **options: Any,
) -> pd.DataFrame | None:
    """``run`` for callers already inside an event loop. ``rows`` ("3,7-12"), ``only``,
    ``where``, ``sample``/``seed``, ``limit`` and ``shard`` ("K/N") select jobs as on the
    command line."""
    selection = selection_from_options(rows, only, where, sample, seed, limit, shard)
    plan, chosen = selection.plan_file(path)
    opts = RunOptions(
        out=plan.loaded.out_dir(out, selection.shard),
        base_url=base_url,
        fake=fake,
        shards=selection.shard_count,
        **options,
    )
    return await run_plan(plan, opts, None if chosen is None else plan.jobs_in(chosen))


def settings_for(loaded: LoadedManifest, opts: RunOptions) -> Settings:
    limits = loaded.manifest.limits
    share = max(1, opts.shards)  # limits from the command line are per shard already
    return Settings(
        concurrency=opts.concurrency or max(1, math.ceil(limits.concurrency / share)),
        rate=opts.rate if opts.rate is not None else (limits.rate and limits.rate / share),
        max_attempts=opts.max_attempts or limits.max_attempts,
        task_timeout=opts.task_timeout or limits.task_timeout,
        retry_failed=opts.retry_failed,
        max_credits=opts.max_credits,
    )


async def run_plan(
    plan: Plan, opts: RunOptions, jobs: Sequence[Job] | None = None
) -> pd.DataFrame | None:
    """Run a checked plan (or the selected ``jobs`` of it) into its output dir; raises
    RunStopped subclasses on early ends. The results table holds the jobs this dir has
    run so far plus the selected ones (all of the plan when nothing was selected); None
    when ``opts.keep_frame`` is off."""
    loaded = plan.loaded
    settings = settings_for(loaded, opts)
    client = _client(opts)  # before the dir is touched: a missing key changes nothing
    location = loaded.out_dir(opts.out)
    try:
        if not is_url(location):
            return await _run_in_dir(plan, opts, settings, client, local_path(location), jobs)
        mirror = Mirror(str(location), opts.sync_interval)
        staging = await anyio.to_thread.run_sync(mirror.prepare)
        try:
            return await _run_in_dir(plan, opts, settings, client, staging, jobs, mirror)
        finally:
            mirror.close(clean=mirror.finished)
    finally:
        await client.aclose()


async def _run_in_dir(
    plan: Plan,
    opts: RunOptions,
    settings: Settings,
    client: EvolinkClient,
    out_dir: Path,
    selected: Sequence[Job] | None,
    mirror: Mirror | None = None,
) -> pd.DataFrame | None:
    todo: Iterable[Job] = plan.iter_jobs() if selected is None else selected
    total = len(plan) if selected is None else len(selected)
    shown_dir = mirror.url if mirror else out_dir
    with exclusive_dir(out_dir), Journal.open(out_dir) as journal:
        journal.claim(plan.name, shown_dir)
        remove_partial_files(out_dir / "images")
        journal.start_invocation()
        reporter = opts.reporter or Reporter()
        engine = Engine(
            client,
            journal,
            out_dir,
            settings,
            timing=opts.timing,
            reporter=reporter,
            stored_size=mirror.stored_size if mirror else None,
        )
        started = time.time()
        interrupted = False
        syncing = (lambda: mirror.keep_synced(journal)) if mirror else None
        try:
            interrupted = await _run_engine(
                engine, todo, total, plan.estimate, opts.handle_signals, syncing
            )
        finally:
            reporter.close()
        latest = _invocation_summary(engine, reporter, started, interrupted, opts, settings)
        latest["selected_jobs"] = total
        frame = _write_outputs(out_dir, plan, journal, selected, latest, opts.keep_frame)
        if mirror is not None:
            await mirror.finish(journal, list(OUTPUT_FILES))
    if interrupted:
        raise RunInterrupted(f"interrupted; state saved in {shown_dir}, rerun to continue", frame)
    if engine.unreachable is not None:
        raise RunAborted(
            f"cannot reach the API at {client.base_url} ({engine.unreachable}); nothing was "
            "submitted; check --base-url / EVOLINK_BASE_URL and the network, then rerun",
            frame,
        )
    if engine.fatal is not None:
        raise RunAborted(
            f"the API refused the run ({engine.fatal}); submitting stopped, finished work is "
            f"in {shown_dir}",
            frame,
        )
    return frame


def _write_outputs(
    out_dir: Path,
    plan: Plan,
    journal: Journal,
    selected: Sequence[Job] | None,
    latest: dict[str, Any],
    keep_frame: bool,
) -> pd.DataFrame | None:
    """The tables, a chunk of jobs at a time; then run.json and the gallery. The jobs
    shown: every job of the plan, or (with a selection) the selected ones and those this
    dir has run before."""
    wanted = None if selected is None else frozenset(job.job_id for job in selected)
    writer = ResultsWriter.for_plan(out_dir, plan, wanted, keep_frame)
    try:
        for chunk in chunks(_shown(plan, journal, selected, wanted)):
            writer.add_jobs(plan, chunk, journal.records_of([job.job_id for job in chunk]))
        if not writer.counts["jobs"]:
            writer.add_jobs(plan, [], {})  # the header and an empty table
    except BaseException:
        writer.abort()
        raise
    latest["selected"] = dict(writer.counts if wanted is None else writer.selected_counts)
    journal.finish_invocation(latest)
    return writer.finish(_run_info(plan, journal, writer.summary(), latest))


def _shown(
    plan: Plan, journal: Journal, selected: Sequence[Job] | None, wanted: frozenset[str] | None
) -> Iterable[Job]:
    if selected is None or wanted is None:
        return plan.iter_jobs()
    ran = journal.job_ids() & plan.id_set()
    if wanted.issuperset(ran):
        return selected  # already in plan order: no need to render the plan again
    return plan.iter_jobs(wanted | ran)


async def _run_engine(
    engine: Engine,
    jobs: Iterable[Job],
    total: int,
    estimate: Callable[[Job], float],
    handle_signals: bool,
    background: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> bool:
    """Run the engine (and ``background`` beside it, until the engine is done); on
    SIGINT/SIGTERM stop it and return True. A second Ctrl-C kills."""
    interrupted = False
    watch = handle_signals and threading.current_thread() is threading.main_thread()
    async with anyio.create_task_group() as group:
        if background is not None:
            group.start_soon(background)
        if watch:

            async def watcher() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        engine.stop_submitting()
                        signal.signal(signal.SIGINT, signal.SIG_DFL)
                        work.cancel()
                        return

            group.start_soon(watcher)
        with anyio.CancelScope() as work:
            await engine.run(jobs, total, estimate)
        group.cancel_scope.cancel()
    return interrupted


def _client(opts: RunOptions) -> EvolinkClient:
    if opts.fake:
        transport = httpx.ASGITransport(
            app=create_app(opts.fake_options or FakeOptions(task_seconds=(0.5, 2.0)))
        )
        return EvolinkClient(FAKE_BASE_URL, "fake-key", transport=transport)
    key = opts.api_key or os.environ.get("EVOLINK_API_KEY", "").strip()
    if not key:
        raise MissingApiKey()
    base_url = opts.base_url or os.environ.get("EVOLINK_BASE_URL") or DEFAULT_BASE_URL
    return EvolinkClient(base_url, key, transport=opts.transport)


@contextlib.contextmanager
def exclusive_dir(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output dir: two runs never share it at once."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"{out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    handle = (out_dir / LOCK_NAME).open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirError(f"{out_dir} is in use by another runner process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _invocation_summary(
    engine: Engine,
    reporter: Reporter,
    started: float,
    interrupted: bool,
    opts: RunOptions,
    settings: Settings,
) -> dict[str, Any]:
    tally = reporter.tally
    ended = time.time()
    outcome = (
        "interrupted"
        if interrupted
        else "aborted"
        if engine.fatal
        else "unreachable"
        if engine.unreachable
        else ("budget" if engine.budget_stop else "finished")
    )
    return {
        "started_at": iso(started),
        "finished_at": iso(ended),
        "duration_s": round(ended - started, 3),
        "outcome": outcome,
        "submissions": tally.submissions,
        "completed": tally.completed,
        "failed": tally.failed,
        "retries": tally.retries,
        "throttled": tally.throttled,
        "fatal_error": str(engine.fatal) if engine.fatal else None,
        "fake": opts.fake,
        "settings": {
            "concurrency": settings.concurrency,
            "rate": settings.rate,
            "max_attempts": settings.max_attempts,
            "task_timeout": settings.task_timeout,
            "retry_failed": settings.retry_failed,
            "max_credits": settings.max_credits,
        },
    }


def _run_info(
    plan: Plan, journal: Journal, counts: dict[str, Any], latest: dict[str, Any]
) -> dict[str, Any]:
    invocations = journal.invocations()
    return {
        "runner_version": VERSION,
        "name": plan.name,
        "manifest": str(plan.loaded.path),
        "resolved_manifest": plan.loaded.manifest.model_dump(mode="json"),
        "input_files": {
            role: {"path": str(path), "sha256": file_sha256(path)}
            for role, path in plan.input_files.items()
        },
        "totals": {
            **counts,
            "manifest_jobs": len(plan),
            "estimated_credits": plan.estimated_credits(),
            "first_started_at": iso(invocations[0]["started_at"]) if invocations else None,
            "invocations": len(invocations),
        },
        "latest": latest,
    }
