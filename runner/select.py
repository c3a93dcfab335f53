"""Selecting jobs: ``--rows``, ``--only``, ``--where``, ``--shard K/N`` (an
intersection), then ``--sample N --seed S`` (a deterministic random N) and ``--limit N``
(the first N)."""

from __future__ import annotations

import itertools
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .errors import ManifestError
from .expand import Job, JobList, Plan, credits_of, plan_manifest
from .manifest import LoadedManifest, load_manifest

WHERE_MAX_CHARS = 500
WHERE_BUDGET_S = 10.0  # time --where may take, plus WHERE_PER_JOB_S for each job
WHERE_PER_JOB_S = 0.0002
MAX_REPEAT = 10_000  # longest string or list '*' may build inside --where
_ROW_SPEC = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class Selection:
    """Which jobs of a plan to take; an empty selection takes them all."""

    rows: frozenset[int] | None = None
    only: frozenset[str] | None = None
    where: str | None = None
    sample: int | None = None
    seed: int = 0
    limit: int | None = None
    shard: tuple[int, int] | None = None  # (K, N): the jobs whose id hashes to K mod N

    @property
    def is_everything(self) -> bool:
        return self == Selection(seed=self.seed)

    @property
    def shard_count(self) -> int:
        """How many shards share the manifest's limits (1 without --shard)."""
        return self.shard[1] if self.shard else 1

    def plan_file(self, path: str | Path) -> tuple[Plan, JobList | None]:
        """Plan a manifest and select from it in the same streaming pass; the list is
        None when nothing was selected (every job runs, and the outputs show every job)."""
        loaded = load_manifest(path)
        if self.is_everything:
            return plan_manifest(loaded), None
        chooser = _Chooser(self, loaded)
        plan = plan_manifest(loaded, chooser)
        return plan, chooser.finish(plan)

    def apply(self, plan: Plan) -> list[Job]:
        """The selected jobs of a plan, in plan order."""
        chooser = _Chooser(self, plan.loaded)
        for job in plan.iter_jobs():
            chooser(job)
        return plan.jobs_in(chooser.finish(plan))


class _Chooser:
    """Applies a selection to each job as the plan's pass renders it: rows, only, shard
    and where filter; sample and limit pick from what passed."""

    def __init__(self, selection: Selection, loaded: LoadedManifest) -> None:
        self.selection = selection
        self.where = _WhereTest(selection.where, loaded) if selection.where is not None else None
        self.passed = JobList()
        self.prices = loaded.manifest.price_table()
        # without --sample, --limit takes the first N that pass: the rest need no Job
        self.wanted = selection.limit if selection.sample is None else None

    def __call__(self, job: Job) -> None:
        s = self.selection
        if self.wanted is not None and len(self.passed) >= self.wanted:
            return
        if s.rows is not None and job.row not in s.rows:
            return
        if s.only is not None and job.job_id not in s.only:
            return
        if s.shard is not None and not in_shard(job.job_id, *s.shard):
            return
        if self.where is not None and not self.where(job):
            return
        self.passed.add(job, credits_of(job, self.prices))

    def finish(self, plan: Plan) -> JobList:
        s = self.selection
        if s.only is not None:
            unknown = sorted(s.only - plan.id_set())
            if unknown:
                raise ManifestError(
                    f"no such job in this manifest: {', '.join(unknown)}", field="--only"
                )
        if s.sample is not None and s.sample < len(self.passed):
            picked = random.Random(s.seed).sample(range(len(self.passed)), s.sample)
            ids = {self.passed.ids[index] for index in picked}
        elif s.limit is not None and len(self.passed) > s.limit:
            ids = set(self.passed.ids[: s.limit])
        else:
            return self.passed
        kept = self.passed.kept
        jobs = plan.iter_jobs(ids) if kept is None else (j for j in kept if j.job_id in ids)
        chosen = JobList()
        for job in itertools.islice(jobs, s.limit):
            chosen.add(job, plan.estimate(job))
        return chosen


def in_shard(job_id: str, index: int, count: int) -> bool:
    """Shards split by job id (a hash): the same manifest and N always give the same
    parts, and adding rows never moves an existing job to another shard."""
    return int(job_id, 16) % count == index


def parse_shard(spec: str) -> tuple[int, int]:
    """``3/8`` → (3, 8); K counts from 0, as a Kubernetes Indexed Job's index does."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not found:
        raise ManifestError(f"{spec!r} is not K/N, e.g. 0/8", field="--shard")
    index, count = int(found.group(1)), int(found.group(2))
    if count < 1 or index >= count:
        raise ManifestError(f"{spec!r}: K must be 0 to N-1", field="--shard")
    return index, count


def parse_rows(spec: str) -> frozenset[int]:
    """``3,7-12`` → {3, 7, 8, 9, 10, 11, 12}; raises ManifestError on anything else."""
    rows: set[int] = set()
    for part in spec.split(","):
        found = _ROW_SPEC.match(part)
        if not found:
            raise ManifestError(
                f"{part.strip()!r} is not a row or a range like 7-12", field="--rows"
            )
        first = int(found.group(1))
        last = int(found.group(2)) if found.group(2) else first
        if last < first:
            raise ManifestError(f"{part.strip()!r}: the range goes backwards", field="--rows")
        if last - first > 10_000_000:
            raise ManifestError(f"{part.strip()!r}: the range is too large", field="--rows")
        rows.update(range(first, last + 1))
    return frozenset(rows)


def selection_from_options(
    rows: str | None = None,
    only: Iterable[str] | None = None,
    where: str | None = None,
    sample: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    shard: str | None = None,
) -> Selection:
    """Build a Selection from command-line values, checking them."""
    if where is not None and len(where) > WHERE_MAX_CHARS:
        raise ManifestError(
            f"the expression has {len(where)} characters, at most {WHERE_MAX_CHARS} are allowed",
            field="--where",
        )
    for name, value in (("--sample", sample), ("--limit", limit)):
        if value is not None and value < 1:
            raise ManifestError("must be 1 or more", field=name)
    only_ids = frozenset(i.strip() for item in only or () for i in item.split(",") if i.strip())
    return Selection(
        rows=parse_rows(rows) if rows is not None else None,
        only=only_ids or None,
        where=where,
        sample=sample,
        seed=seed,
        limit=limit,
        shard=parse_shard(shard) if shard is not None else None,
    )


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, plus a cap on what ``*`` and ``**`` may build (``'x' * 10**9``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 100:
            raise jinja2.exceptions.SecurityError("exponent too large")
        if operator == "*":
            sizes = [len(x) for x in (left, right) if isinstance(x, (str, list, tuple))]
            counts = [x for x in (left, right) if isinstance(x, int)]
            if sizes and counts and sizes[0] * max(counts) > MAX_REPEAT:
                raise jinja2.exceptions.SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


class _WhereTest:
    """A ``--where`` expression, compiled once and tried on each job in a sandbox with a
    cap on what ``*`` builds and on the total time."""

    def __init__(self, expression: str, loaded: LoadedManifest) -> None:
        env = _BoundedSandbox(undefined=jinja2.StrictUndefined)
        try:
            self.test = env.compile_expression(expression, undefined_to_none=False)
        except jinja2.TemplateSyntaxError as error:
            raise ManifestError(
                f"not a valid expression: {error.message}", field="--where"
            ) from None
        self.variables = loaded.manifest.vars
        self.started = time.monotonic()
        self.tried = 0

    def __call__(self, job: Job) -> bool:
        context = {
            **self.variables,
            **job.columns,
            **job.matrix,
            "sample": job.sample,
            "row": job.row,
            "job_id": job.job_id,
            "prompt": job.prompt,
            **{k: v for k, v in job.request.items() if k in ("size", "quality")},
        }
        try:
            result = bool(self.test(**context))
        except jinja2.UndefinedError as error:
            raise ManifestError(f"{error.message}", field="--where") from None
        except Exception as error:  # the sandbox's refusals and any other failure
            raise ManifestError(f"{type(error).__name__}: {error}", field="--where") from None
        self.tried += 1
        allowed = WHERE_BUDGET_S + self.tried * WHERE_PER_JOB_S
        if time.monotonic() - self.started > allowed:
            raise ManifestError(f"the expression took longer than {allowed:.0f} s", field="--where")
        return result
