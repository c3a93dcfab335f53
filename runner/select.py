"""Selecting jobs: ``--rows``, ``--only``, ``--where``, ``--shard K/N`` (an
intersection), then ``--sample N --seed S`` (a deterministic random N) and ``--limit N``
(the first N)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .errors import ManifestError
from .expand import Job, Plan

WHERE_MAX_CHARS = 500
WHERE_BUDGET_S = 10.0  # total time --where may take over all jobs
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

    def jobs_of(self, plan: Plan) -> list[Job] | None:
        """The selected jobs, or None when nothing was selected (every job runs, and
        the outputs show every job)."""
        return None if self.is_everything else self.apply(plan)

    def apply(self, plan: Plan) -> list[Job]:
        """The selected jobs, in plan order."""
        jobs: Sequence[Job] = plan.jobs
        if self.rows is not None:
            jobs = [job for job in jobs if job.row in self.rows]
        if self.only is not None:
            unknown = sorted(self.only - {job.job_id for job in plan.jobs})
            if unknown:
                raise ManifestError(
                    f"no such job in this manifest: {', '.join(unknown)}", field="--only"
                )
            jobs = [job for job in jobs if job.job_id in self.only]
        if self.shard is not None:
            jobs = [job for job in jobs if in_shard(job.job_id, *self.shard)]
        if self.where is not None:
            jobs = _where(self.where, jobs, plan)
        if self.sample is not None and self.sample < len(jobs):
            picked = set(random.Random(self.seed).sample(range(len(jobs)), self.sample))
            jobs = [job for index, job in enumerate(jobs) if index in picked]
        if self.limit is not None:
            jobs = jobs[: self.limit]
        return list(jobs)


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


def _where(expression: str, jobs: Sequence[Job], plan: Plan) -> list[Job]:
    env = _BoundedSandbox(undefined=jinja2.StrictUndefined)
    try:
        test = env.compile_expression(expression, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as error:
        raise ManifestError(f"not a valid expression: {error.message}", field="--where") from None
    variables = plan.loaded.manifest.vars
    deadline = time.monotonic() + WHERE_BUDGET_S
    kept = []
    for job in jobs:
        context = {
            **variables,
            **job.columns,
            **job.matrix,
            "sample": job.sample,
            "row": job.row,
            "job_id": job.job_id,
            "prompt": job.prompt,
            **{k: v for k, v in job.request.items() if k in ("size", "quality")},
        }
        try:
            if test(**context):
                kept.append(job)
        except jinja2.UndefinedError as error:
            raise ManifestError(f"{error.message}", field="--where") from None
        except Exception as error:  # the sandbox's refusals and any other failure
            raise ManifestError(f"{type(error).__name__}: {error}", field="--where") from None
        if time.monotonic() > deadline:
            raise ManifestError(
                f"the expression took longer than {WHERE_BUDGET_S:g} s", field="--where"
            )
    return kept
