"""``runner run M --ray --shards N``: the shards of a manifest as Ray tasks.

The driver checks the whole manifest first (bad input: nothing is sent), then starts one
task per shard. Each task gets the manifest and its input files as bytes (the workers
may be other machines), runs its shard with the ordinary engine into
``OUT/shards/K-of-N`` and reports its tally to a small actor, which the driver reads for
one combined progress bar. At the end the driver merges the shards into ``OUT`` itself,
so ``OUT`` looks like the output dir of a single run; a rerun resumes every shard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError, MissingApiKey, OutputDirError, RunnerError, RunStopped
from .expand import plan_file
from .merge import MergeReport, merge_runs
from .objectstore import is_url, local_path
from .progress import Reporter, Tally

SHARD_CPUS = 0.5  # a shard mostly waits on the network: two share a core
REPORT_EVERY_S = 0.5
TEMPLATE_FOLDER_MAX_BYTES = 10 * 1024 * 1024


@dataclass
class ShardOutcome:
    """What one shard task returned."""

    shard: int
    exit_code: int
    message: str
    completed: int
    failed: int
    pending: int


@dataclass
class RayRun:
    """The result of a Ray run: the merged dir, the merge report, every shard's outcome."""

    out: str | Path
    merge: MergeReport
    shards: list[ShardOutcome]

    @property
    def exit_code(self) -> int:
        codes = {outcome.exit_code for outcome in self.shards}
        for code in (130, 3, 2):
            if code in codes:
                return code
        return 1 if self.merge.completed < self.merge.jobs else 0


class ShardsFailed(RunnerError):
    """Raised when shards ended without running (a refused key, an unreachable API)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Secret:
    """The API key on its way to the workers; never shown by a repr or a log."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "_Secret(***)"


def shard_location(out: str | Path, index: int, count: int) -> str | Path:
    """Where shard K of N writes below the Ray run's ``--out``."""
    part = f"shards/{index}-of-{count}"
    return f"{str(out).rstrip('/')}/{part}" if is_url(out) else local_path(out) / part


def run_on_ray(
    manifest: str | Path,
    *,
    out: str | Path | None = None,
    shards: int | None = None,
    address: str | None = None,
    reporter: Reporter | None = None,
    **options: Any,
) -> RayRun:
    """Run every shard of ``manifest`` as a Ray task and merge them into ``out``.
    ``options`` are ``runner.run``'s (fake, base_url, api_key, concurrency ...); the
    limits among them (concurrency, rate, max_credits) are for the whole run and are
    divided among the shards, as the manifest's are."""
    ray = _import_ray()
    plan = plan_file(manifest)  # the whole manifest is checked before anything starts
    location = plan.loaded.out_dir(out)
    bundle = _bundle(plan.input_files)
    key = options.pop("api_key", None) or os.environ.get("EVOLINK_API_KEY", "").strip()
    if not key and not options.get("fake"):
        raise MissingApiKey()
    api_key = _Secret(key or None)
    reporter = reporter or Reporter()
    with _ray_session(ray, address):
        count = shards or max(1, int(ray.cluster_resources().get("CPU", 1) / SHARD_CPUS))
        options = _per_shard(options, count)
        if not is_url(location) and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
            raise ManifestError(
                "the Ray cluster has several machines: --out must be an object-store URL "
                "(s3://bucket/prefix) that all of them can write",
                field="--out",
            )
        board = ray.remote(_Board).remote()
        task = ray.remote(_run_shard).options(num_cpus=SHARD_CPUS)
        refs = [
            task.remote(
                bundle, k, count, shard_location(location, k, count), options, api_key, board
            )
            for k in range(count)
        ]
        try:
            _follow(ray, refs, board, reporter, len(plan))
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)
            raise
        finally:
            reporter.close()
        outcomes = [ShardOutcome(**result) for result in ray.get(refs)]
    unfinished = [o for o in outcomes if o.exit_code >= 2 and not o.completed + o.failed]
    if unfinished:
        raise ShardsFailed(
            "; ".join(f"shard {o.shard}: {o.message}" for o in unfinished),
            max(o.exit_code for o in unfinished),
        )
    parts = [shard_location(location, k, count) for k in range(count)]
    with _exclusive(location):
        report = merge_runs(parts, location, plan=plan)
    return RayRun(location, report, outcomes)


def _per_shard(options: dict[str, Any], count: int) -> dict[str, Any]:
    shared = dict(options)
    if shared.get("concurrency"):
        shared["concurrency"] = max(1, math.ceil(shared["concurrency"] / count))
    for name in ("rate", "max_credits"):
        if shared.get(name) is not None:
            shared[name] = shared[name] / count
    return shared


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ManifestError(
            "Ray is not installed: pip install -e '.[ray]' (or pip install 'ray[default]')",
            field="--ray",
        ) from None
    return ray


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address`` (or start a local one); disconnect after."""
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise OutputDirError(
                f"cannot connect to Ray at {address or 'local'}: {error}"
            ) from None
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def _exclusive(location: str | Path) -> Iterator[None]:
    if is_url(location):
        yield  # merge_runs takes the store's lock itself
        return
    from .batch import exclusive_dir

    with exclusive_dir(local_path(location)):
        yield


def _bundle(input_files: dict[str, Path]) -> dict[str, Any]:
    """The manifest, its rows and templates (with the template's folder, for includes) as
    bytes by path relative to their common folder."""
    paths = {path.resolve() for path in input_files.values()}
    template = input_files.get("template")
    if template is not None:
        siblings = [p.resolve() for p in template.parent.iterdir() if p.is_file()]
        if sum(p.stat().st_size for p in siblings) <= TEMPLATE_FOLDER_MAX_BYTES:
            paths.update(siblings)
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return {
        "manifest": str(input_files["manifest"].resolve().relative_to(root)),
        "files": {str(p.relative_to(root)): p.read_bytes() for p in sorted(paths)},
    }


def _follow(ray: Any, refs: list[Any], board: Any, reporter: Reporter, total: int) -> None:
    """Show the shards' summed tallies (over every job of the manifest: shards still
    waiting for a free worker count as queued) until every task has returned."""
    pending = list(refs)
    reporter.start(total=total, done=0)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=REPORT_EVERY_S)
        reporter.tally = _sum(ray.get(board.tallies.remote()).values())
        reporter.tally.total = total
        reporter.refresh()


def _sum(tallies: Any) -> Tally:
    total = Tally()
    for tally in tallies:
        for name, value in tally.items():
            setattr(total, name, getattr(total, name) + value)
    return total


class _Board:
    """A Ray actor: the latest tally of every shard."""

    def __init__(self) -> None:
        self._tallies: dict[int, dict[str, int]] = {}

    def update(self, shard: int, tally: dict[str, int]) -> None:
        self._tallies[shard] = tally

    def tallies(self) -> dict[int, dict[str, int]]:
        return self._tallies


class _BoardReporter(Reporter):
    """A shard's reporter: sends its tally to the board at most every REPORT_EVERY_S."""

    def __init__(self, board: Any, shard: int) -> None:
        super().__init__()
        self._board, self._shard, self._last = board, shard, 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last >= REPORT_EVERY_S:
            self._last = now
            self._send()

    def close(self) -> None:
        self._send()

    def _send(self) -> None:
        self._board.update.remote(self._shard, dataclasses.asdict(self.tally))


def _run_shard(
    bundle: dict[str, Any],
    index: int,
    count: int,
    out: str | Path,
    options: dict[str, Any],
    api_key: _Secret,
    board: Any,
) -> dict[str, Any]:
    """A Ray task: write the shipped files to a temp dir and run one shard from them."""
    from .batch import run

    reporter = _BoardReporter(board, index)
    with tempfile.TemporaryDirectory(prefix="runner-shard-") as folder:
        for relative, data in bundle["files"].items():
            target = Path(folder) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        manifest = Path(folder) / bundle["manifest"]
        code, message = 0, ""
        try:
            frame = run(
                manifest,
                out=out,
                shard=f"{index}/{count}",
                reporter=reporter,
                handle_signals=False,
                api_key=api_key.value,
                **options,
            )
        except RunStopped as stopped:
            frame, code, message = stopped.results, stopped.exit_code, str(stopped)
        except RunnerError as error:
            frame, code, message = None, error.exit_code, str(error)
    statuses = frame["status"].value_counts().to_dict() if frame is not None else {}
    completed, failed = int(statuses.get("completed", 0)), int(statuses.get("failed", 0))
    if code == 0 and failed:
        code = 1
    return {
        "shard": index,
        "exit_code": code,
        "message": message,
        "completed": completed,
        "failed": failed,
        "pending": int(statuses.get("pending", 0)),
    }
