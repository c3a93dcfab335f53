"""runner: YAML manifest → many Evolink image jobs → verified files and a results table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import (
    ApiError,
    DownloadError,
    FatalApiError,
    ManifestError,
    MissingApiKey,
    OutputDirError,
    RunAborted,
    RunInterrupted,
    RunnerError,
    RunStopped,
    TaskFailed,
)
from .expand import Job, Plan
from .expand import plan_file as plan
from .manifest import load_manifest

if TYPE_CHECKING:
    from .batch import RunOptions, arun, run

_RUNNING = ("RunOptions", "arun", "run")


def __getattr__(name: str) -> Any:
    """``run``/``arun`` load the engine (pandas, httpx, ...) on first use, so that
    ``runner plan`` and ``runner validate`` start fast."""
    if name in _RUNNING:
        from . import batch

        return getattr(batch, name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")


__all__ = [
    "ApiError",
    "DownloadError",
    "FatalApiError",
    "Job",
    "ManifestError",
    "MissingApiKey",
    "OutputDirError",
    "Plan",
    "RunAborted",
    "RunInterrupted",
    "RunOptions",
    "RunStopped",
    "RunnerError",
    "TaskFailed",
    "__version__",
    "arun",
    "load_manifest",
    "plan",
    "run",
]
