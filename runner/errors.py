"""The exception tree of runner; the CLI turns each into one line and an exit code.

RunnerError                      root; ``exit_code`` tells the CLI how to end
├── ManifestError                bad manifest or input (exit 2), names file/line/field
├── OutputDirError               output dir refused: other manifest, in use (exit 2)
├── MissingApiKey                no EVOLINK_API_KEY (exit 2)
├── ApiError                     the API answered with an error
│   ├── RateLimited              429, carries ``retry_after``
│   ├── ServerError              5xx, worth retrying
│   ├── FatalApiError            401/402/403: stop submitting (exit 3)
│   ├── BadRequest               400 and other 4xx: never retried
│   └── TaskNotFound             404 on a task query: unknown or expired
├── NetworkError                 the request never got an answer
│   └── ApiUnreachable           no request ever reached the API (wrong URL, no network)
├── TaskFailed                   the task ended ``failed`` (``retryable`` by its code)
├── TaskTimeout                  no final status within ``task_timeout``
├── DownloadError                a result could not be fetched or is not a whole image
│   └── LinkExpired              the result URL is gone: the job must be resubmitted
└── RunStopped                   a run ended early, carries ``results`` (partial)
    ├── RunInterrupted           Ctrl-C or SIGTERM (exit 130)
    └── RunAborted               a fatal API refusal (exit 3)
"""

from __future__ import annotations

from typing import Any


class RunnerError(Exception):
    """Root of every error runner raises on purpose."""

    exit_code = 1


class ManifestError(RunnerError):
    """Raised when a manifest or one of its inputs is invalid; nothing is sent then."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        where: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.where = where
        self.reason = _one_line(message)
        super().__init__(self._compose())

    def _compose(self) -> str:
        place = ""
        if self.file:
            place = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (place, self.where, self.field) if p]
        return ": ".join([*parts, self.reason])


class OutputDirError(RunnerError):
    """Raised when an output dir cannot be used for this run."""

    exit_code = 2


class MissingApiKey(RunnerError):
    """Raised when a real run has no API key to send."""

    exit_code = 2

    def __init__(self) -> None:
        super().__init__(
            "no API key: set EVOLINK_API_KEY (or use --fake to try runner without one)"
        )


class ApiError(RunnerError):
    """Raised when the API answers a request with an error status."""

    retryable = False

    def __init__(
        self,
        status: int,
        code: str | int | None = None,
        message: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = _one_line(message)
        self.retry_after = retry_after
        detail = f" {code}" if code not in (None, "") else ""
        text = f": {self.message}" if self.message else ""
        super().__init__(f"HTTP {status}{detail}{text}")


class RateLimited(ApiError):
    """Raised on 429; the request may be sent again after ``retry_after``."""

    retryable = True


class ServerError(ApiError):
    """Raised on 500, 502, 503, 504: the API had trouble, try again later."""

    retryable = True


class FatalApiError(ApiError):
    """Raised on 401, 402, 403: the key, the quota or the access is refused."""

    exit_code = 3


class BadRequest(ApiError):
    """Raised on 400 and other client errors: sending it again cannot help."""


class TaskNotFound(ApiError):
    """Raised when a task query answers 404: the task is unknown or has expired."""

    retryable = True


class NetworkError(RunnerError):
    """Raised when a request got no answer (connection refused, reset, timed out)."""

    retryable = True


class ApiUnreachable(NetworkError):
    """Raised when not a single request reached the API: a wrong URL or no network."""

    retryable = False


class TaskFailed(RunnerError):
    """Raised when a task ends ``failed``; ``retryable`` follows its error code."""

    def __init__(self, code: str | int | None, message: str, *, retryable: bool) -> None:
        self.code = code
        self.message = _one_line(message)
        self.retryable = retryable
        super().__init__(f"task failed: {code}: {self.message}" if code else self.message)


class TaskTimeout(RunnerError):
    """Raised when a task has no final status ``task_timeout`` seconds after submission."""

    retryable = False

    def __init__(self, task_id: str, seconds: float) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id} had no final status after {seconds:g} s")


class DownloadError(RunnerError):
    """Raised when a result cannot be downloaded or is not a whole image."""

    retryable = True


class LinkExpired(DownloadError):
    """Raised when a result URL answers 404/410: only a new task can bring the image."""


class RunStopped(RunnerError):
    """Raised when a run ends before every job did; ``results`` holds what finished."""

    def __init__(self, message: str, results: Any = None) -> None:
        self.results = results
        super().__init__(message)


class RunInterrupted(RunStopped):
    """Raised when Ctrl-C or SIGTERM stopped a run; the journal keeps its state."""

    exit_code = 130


class RunAborted(RunStopped):
    """Raised when the API refused the key, quota or access and submitting stopped."""

    exit_code = 3


def is_retryable(error: BaseException) -> bool:
    """Tell whether sending the work again may succeed."""
    return bool(getattr(error, "retryable", False))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
