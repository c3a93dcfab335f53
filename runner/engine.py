"""The engine: runs jobs against the API with bounded concurrency, a rate limit,
polling and retries, writing every step to the journal before acting on it.

A job holds a slot from its submission until its final status is seen; downloads and
backoff waits do not. Until one submission has been accepted, submissions go one at a
time, so a rejected key costs one request, not one per slot.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from .download import download_image
from .errors import (
    ApiError,
    ApiUnreachable,
    DownloadError,
    FatalApiError,
    LinkExpired,
    NetworkError,
    RateLimited,
    ServerError,
    TaskFailed,
    TaskTimeout,
    is_retryable,
)
from .evolink import LINK_LIFETIME_S, EvolinkClient, Task, task_failure_is_retryable
from .expand import Job
from .journal import JobRecord, Journal
from .policy import FirstPoll, Timing
from .progress import Reporter
from .ratelimit import RateLimiter

MAX_THROTTLES_PER_SUBMISSION = 100
SUBMIT_SHIELD_S = 90  # a submission in progress finishes (or times out) even on Ctrl-C
YIELD_EVERY = 200  # jobs looked at between two checkpoints of the event loop
PROGRESS_MARGIN_S = 0.02  # poll this long after the end that progress predicts
PROGRESS_AGREEMENT_S = 1.5  # progress and estimated_time must agree this well ...
PROGRESS_HORIZON_S = 3.0  # ... for a poll this far ahead to be guided by progress
LINK_SAFETY_S = 600  # treat a link as expired this long before its 24 h are up


@dataclass(frozen=True)
class Settings:
    """The limits a run obeys (manifest limits, overridden by the command line)."""

    concurrency: int = 8
    rate: float | None = None
    max_attempts: int = 4
    task_timeout: float = 900.0
    retry_failed: bool = False
    max_credits: float | None = None


class _NotSent(Exception):
    """A job was not submitted because submitting has stopped; it stays pending."""


class DownloadFailed(DownloadError):
    """Raised when a result could not be downloaded after every retry."""

    retryable = False


class Engine:
    """Runs the given jobs to a final state; the journal records every step."""

    def __init__(
        self,
        client: EvolinkClient,
        journal: Journal,
        out_dir: Path,
        settings: Settings,
        *,
        timing: Timing | None = None,
        reporter: Reporter | None = None,
        seed: int | None = None,
        stored_size: Callable[[str], int | None] | None = None,
    ) -> None:
        self.client = client
        self.stored_size = stored_size or self._local_size
        self.journal = journal
        self.out_dir = out_dir
        self.settings = settings
        self.timing = timing or Timing()
        self.reporter = reporter or Reporter()
        self.limiter = RateLimiter(settings.rate)
        self.fatal: FatalApiError | None = None
        self.unreachable: ApiUnreachable | None = None  # the API never answered at all
        self.budget_stop = False
        self._rng = random.Random(seed)
        self.first_poll = FirstPoll(self.timing)
        self._slots = anyio.CapacityLimiter(settings.concurrency)
        self._live = anyio.Semaphore(settings.concurrency * 4 + 16)
        self._probe = anyio.Lock()
        self._key_verified = False
        self._stopped = False
        self._credits_committed = 0.0

    def stop_submitting(self) -> None:
        """No new submissions from now on; tasks in flight are still followed."""
        self._stopped = True

    async def run(
        self,
        jobs: Iterable[Job],
        total: int | None = None,
        estimate: Callable[[Job], float] | None = None,
    ) -> None:
        """Bring every job to completed or failed (or leave it pending if stopped).
        ``jobs`` may be a stream (a large plan renders them as they are needed): each is
        looked up in the journal when its turn comes, and finished ones are skipped."""
        if total is None:
            jobs = list(jobs)
            total = len(jobs)
        self._credits_committed = self.journal.credits_reserved()
        self.reporter.start(total=total, done=0)
        async with anyio.create_task_group() as group:
            for index, job in enumerate(jobs):
                if index % YIELD_EVERY == 0:
                    await anyio.lowlevel.checkpoint()  # skipping many done jobs takes a while
                record = self.journal.get(job.job_id)
                if not self._needs_work(job, record):
                    self.reporter.already_done()
                    continue
                await self._live.acquire()
                if self._stopped and not _has_task(record):
                    self._live.release()
                    self.reporter.unsent()
                    continue
                cost = estimate(job) if estimate is not None else 0.0
                group.start_soon(self._run_job, job, record, cost)

    def _needs_work(self, job: Job, record: JobRecord | None) -> bool:
        if record is None or record.state in ("pending", "submitting", "submitted"):
            return True
        if record.state == "failed":
            return self.settings.retry_failed
        return self.stored_size(record.file or job.path) != record.bytes

    def _local_size(self, relative: str) -> int | None:
        file = self.out_dir / relative
        return file.stat().st_size if file.is_file() else None

    async def _run_job(self, job: Job, record: JobRecord | None, estimate: float) -> None:
        try:
            if record is not None and record.state == "failed":
                self.journal.reset_attempts(job.job_id)
            await self._attempts(job, record, estimate)
        except _NotSent:
            self.reporter.unsent()
        except FatalApiError as error:
            self._fatal(error)  # the task, if any, stays in the journal for a rerun
            self.reporter.unsent()
        except ApiUnreachable as error:  # a wrong URL or no network, not this job's fault
            self.journal.mark_unsent(job.job_id)
            self.unreachable = self.unreachable or error
            self.stop_submitting()
            self.reporter.unsent()
        except Exception as error:
            self._failed(job, error)
        else:
            self.reporter.completed(job)
        finally:
            self._live.release()

    async def _attempts(self, job: Job, record: JobRecord | None, estimate: float) -> None:
        resume = record
        retrying = self._retrying(is_retryable, on_retry=self.reporter.retrying)
        async for attempt in retrying:
            with attempt:
                await self._attempt(job, resume, estimate)
            resume = None  # a retry always submits again

    def _retrying(
        self,
        worth_retrying: Callable[[BaseException], bool],
        on_retry: Callable[[], None] | None = None,
    ) -> AsyncRetrying:
        """The one retry policy: max_attempts tries, backoff with jitter and Retry-After."""
        return AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._backoff,
            retry=retry_if_exception(worth_retrying),
            sleep=anyio.sleep,
            reraise=True,
            before_sleep=(lambda state: on_retry()) if on_retry else None,
        )

    def _backoff(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return self.timing.backoff(state.attempt_number, self._rng, retry_after)

    async def _attempt(self, job: Job, resume: JobRecord | None, estimate: float) -> None:
        url = _fresh_link(resume)
        if url is None:
            async with self._slots:
                task = await self._submit_and_follow(job, resume, estimate)
            if not task.succeeded:
                raise TaskFailed(
                    task.error_code or task.status,
                    task.error_message or f"task ended {task.status}",
                    retryable=_worth_resubmitting(task),
                )
            url = task.results[0]
            self.journal.mark_result(job.job_id, url)
        await self._download(job, url)

    async def _submit_and_follow(self, job: Job, resume: JobRecord | None, estimate: float) -> Task:
        """The in-flight part of an attempt: submit (or take the known task), poll to final."""
        if resume is not None and resume.state == "submitted" and resume.task_id:
            task_id, estimated, first_wait = resume.task_id, None, 0.0
            deadline = (resume.submitted_at or time.time()) + self.settings.task_timeout
        else:
            task = await self._submit(job, estimate)
            task_id, estimated, first_wait = task.id, task.estimated_time, None
            deadline = time.time() + self.settings.task_timeout
        self.reporter.flight_started()
        try:
            return await self._follow(task_id, estimated, deadline, first_wait=first_wait)
        finally:
            self.reporter.flight_ended()

    async def _submit(self, job: Job, estimate: float) -> Task:
        """Until one submission got through, submissions go one at a time, and the one
        going retries its network errors itself: a refused key or an unreachable API
        costs a few requests, not a few per slot."""
        if self._key_verified:
            return await self._send(job, estimate)
        async with self._probe:
            for attempt in range(1, self.settings.max_attempts + 1):
                try:
                    return await self._send(job, estimate)
                except NetworkError as error:
                    if self._key_verified:
                        raise
                    if attempt == self.settings.max_attempts:
                        raise ApiUnreachable(str(error)) from None
                    await anyio.sleep(self.timing.backoff(attempt, self._rng))
            raise AssertionError("the loop above returns or raises")

    async def _send(self, job: Job, estimate: float) -> Task:
        """Submit once, waiting out 429s (they do not use up an attempt)."""
        for _ in range(MAX_THROTTLES_PER_SUBMISSION):
            generation = await self.limiter.acquire()
            self._check_may_submit(estimate)
            self.journal.mark_submitting(job.job_id)
            try:
                task = await self._submit_shielded(job)
            except RateLimited as error:
                self.journal.mark_unsent(job.job_id)
                self.limiter.throttled_for(error.retry_after, generation)
                self.reporter.throttled()
                await anyio.sleep((error.retry_after or 0.0) * self.timing.scale)
                continue
            except FatalApiError:
                self.journal.mark_unsent(job.job_id)
                raise
            except ApiError as error:
                if not error.retryable:
                    self.journal.mark_unsent(job.job_id)
                raise
            self._credits_committed += task.credits or 0.0
            self.limiter.accepted()
            self._key_verified = True
            self.reporter.submitted()
            return task
        raise RateLimited(429, "rate_limit_exceeded", "still throttled after many waits")

    async def _submit_shielded(self, job: Job) -> Task:
        """Send a submission and record its task id, even if the run is being cancelled:
        a request cut off after the API created the task would be paid for twice."""
        with anyio.CancelScope(shield=True):
            with anyio.fail_after(SUBMIT_SHIELD_S):
                task = await self.client.submit(job.request)
            self.journal.mark_submitted(job.job_id, task.id, task.credits)
        return task

    def _check_may_submit(self, estimate: float) -> None:
        if self._stopped:
            raise _NotSent()
        limit = self.settings.max_credits
        if limit is not None and self._credits_committed + estimate > limit:
            self.budget_stop = True
            self.stop_submitting()
            raise _NotSent()

    async def _follow(
        self,
        task_id: str,
        estimated: float | None,
        deadline: float,
        first_wait: float | None = None,
    ) -> Task:
        """Poll a task until its status is final; transient poll errors only delay it."""
        started = time.monotonic()
        learning = first_wait is None
        if learning:
            await self._wait_first_poll(started, estimated, deadline)
        delays = self.timing.poll_delays(first_wait or 0.0, self._rng)
        wait = next(delays)
        polls = 0
        first_done = False
        last_running = 0.0
        trust_progress = learning
        while True:
            await anyio.sleep(max(0.0, min(wait, deadline - time.time())))
            try:
                task = await self.client.get_task(task_id)
            except (ServerError, NetworkError, RateLimited) as error:
                retry_after = getattr(error, "retry_after", None)
                wait = max(next(delays), (retry_after or 0.0) * self.timing.scale)
                if time.time() >= deadline:
                    raise TaskTimeout(task_id, self.settings.task_timeout) from None
                continue
            polls += 1
            self._key_verified = True
            if polls == 1:
                first_done = task.is_final
            elapsed = (time.monotonic() - started) / (self.timing.scale or 1.0)
            if task.is_final:
                if learning:
                    self.first_poll.observe(estimated, first_done, elapsed, last_running)
                return task
            last_running = elapsed
            if time.time() >= deadline:
                raise TaskTimeout(task_id, self.settings.task_timeout)
            wait = next(delays)
            if trust_progress:
                predicted = _end_from_progress(task, elapsed)
                if predicted is not None and (
                    predicted * self.timing.scale < wait
                    or _agrees_with_estimate(elapsed + predicted, estimated, predicted)
                ):
                    wait = predicted * self.timing.scale
                    trust_progress = False  # one guided poll; if it misses, stop guessing

    async def _wait_first_poll(
        self, started: float, estimated: float | None, deadline: float
    ) -> None:
        """Sleep until the first poll is due, reading the learned delay again as we go."""
        chunk = 0.25 * self.timing.scale
        while True:
            due = started + self.first_poll.delay(estimated) * self.timing.scale
            remaining = min(due - time.monotonic(), deadline - time.time())
            if remaining <= 0:
                return
            await anyio.sleep(min(remaining, chunk) if chunk > 0 else remaining)

    async def _download(self, job: Job, url: str) -> None:
        retrying = self._retrying(lambda e: is_retryable(e) and not isinstance(e, LinkExpired))
        try:
            async for attempt in retrying:
                with attempt:
                    info = await download_image(
                        self.client, url, self.out_dir, job.path, size=job.size
                    )
        except DownloadError as error:
            if isinstance(error, LinkExpired) or not error.retryable:
                raise
            raise DownloadFailed(f"download failed after retries: {error}") from None
        except NetworkError as error:
            raise DownloadFailed(f"download failed after retries: {error}") from None
        self.journal.mark_completed(job.job_id, info)

    def _failed(self, job: Job, error: Exception) -> None:
        self.journal.mark_failed(job.job_id, str(error), getattr(error, "code", None))
        self.reporter.failed(job, str(error))

    def _fatal(self, error: FatalApiError) -> None:
        if self.fatal is None:
            self.fatal = error
        self.stop_submitting()


def _end_from_progress(task: Task, elapsed: float) -> float | None:
    """Seconds until a processing task should be done, if its progress is linear in time
    (progress is a whole percent, so elapsed*100/progress bounds the total from above)."""
    if task.status != "processing" or not 0 < task.progress < 100:
        return None
    return elapsed * (100 / task.progress - 1) + PROGRESS_MARGIN_S


def _agrees_with_estimate(total: float, estimated: float | None, remaining: float) -> bool:
    """Trust progress for a later poll only when its predicted total duration matches the
    API's own estimate (progress stuck at 50% would not) and the end is near."""
    return (
        estimated is not None
        and estimated > 0
        and abs(total - estimated) <= PROGRESS_AGREEMENT_S
        and remaining <= PROGRESS_HORIZON_S
    )


def _worth_resubmitting(task: Task) -> bool:
    """A failure with a retryable code, or a 'completed' task without results, is worth
    sending again; a status the API does not document (e.g. 'cancelled') is final."""
    if task.status == "failed":
        return task_failure_is_retryable(task.error_code)
    return task.status == "completed"


def _has_task(record: JobRecord | None) -> bool:
    return record is not None and record.state == "submitted" and bool(record.task_id)


def _fresh_link(record: JobRecord | None) -> str | None:
    """A result link the journal holds that should still work."""
    if record is None or not record.result_url or record.finished_at is None:
        return None
    if time.time() - record.finished_at > LINK_LIFETIME_S - LINK_SAFETY_S:
        return None
    return record.result_url
