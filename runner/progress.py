"""Progress: a live rich bar on a terminal, plain log lines otherwise; always on stderr."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Tally:
    """The numbers a run shows as it goes."""

    total: int = 0
    already_done: int = 0
    submissions: int = 0
    completed: int = 0
    failed: int = 0
    retries: int = 0
    throttled: int = 0
    unsent: int = 0
    in_flight: int = 0

    @property
    def finished(self) -> int:
        return self.already_done + self.completed + self.failed + self.unsent

    @property
    def queued(self) -> int:
        return max(0, self.total - self.finished - self.in_flight)


class Reporter:
    """Receives the engine's events and keeps the tally; shows nothing (library, tests)."""

    def __init__(self) -> None:
        self.tally = Tally()

    def start(self, total: int, done: int) -> None:
        self.tally.total, self.tally.already_done = total, done
        self.refresh()

    def already_done(self) -> None:
        """A job finished by an earlier run: counted, not run again."""
        self.tally.already_done += 1
        self.refresh()

    def submitted(self) -> None:
        self.tally.submissions += 1

    def flight_started(self) -> None:
        self.tally.in_flight += 1
        self.refresh()

    def flight_ended(self) -> None:
        self.tally.in_flight -= 1
        self.refresh()

    def completed(self, job: Any) -> None:
        self.tally.completed += 1
        self.refresh()

    def failed(self, job: Any, error: str) -> None:
        self.tally.failed += 1
        self.refresh()

    def retrying(self) -> None:
        self.tally.retries += 1
        self.refresh()

    def throttled(self) -> None:
        self.tally.throttled += 1

    def unsent(self) -> None:
        self.tally.unsent += 1
        self.refresh()

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


class BarReporter(Reporter):
    """A live progress bar for a terminal."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("images", total=None, detail="")
        self._progress.start()

    def refresh(self) -> None:
        t = self.tally
        detail = (
            f"queued {t.queued} · in flight {t.in_flight} · done {t.completed} · "
            f"failed {t.failed} · retries {t.retries}"
        )
        self._progress.update(self._task, total=t.total, completed=t.finished, detail=detail)

    def failed(self, job: Any, error: str) -> None:
        super().failed(job, error)
        self._progress.console.print(
            f"[red]failed[/] {job.job_id} (row {job.row}): {error}", markup=True, highlight=False
        )

    def close(self) -> None:
        self._progress.stop()


class LogReporter(Reporter):
    """Plain lines on stderr, at most one status line every ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        super().__init__()
        self._every = every
        self._last = 0.0

    def failed(self, job: Any, error: str) -> None:
        super().failed(job, error)
        _log(f"failed {job.job_id} (row {job.row}): {error}")

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            self._status()

    def close(self) -> None:
        if self.tally.total:
            self._status()

    def _status(self) -> None:
        t = self.tally
        _log(
            f"{t.finished}/{t.total} done: completed {t.completed + t.already_done}, "
            f"failed {t.failed}, in flight {t.in_flight}, queued {t.queued}, "
            f"retries {t.retries}"
        )


def make_reporter(console: Console | None = None) -> Reporter:
    """A bar on a terminal, log lines otherwise."""
    console = console or Console(stderr=True)
    if console.is_terminal:
        return BarReporter(console)
    return LogReporter()


def _log(line: str) -> None:
    print(f"runner: {line}", file=sys.stderr, flush=True)
