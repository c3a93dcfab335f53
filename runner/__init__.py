"""runner: YAML manifest → many Evolink image jobs → verified files and a results table."""

from __future__ import annotations

__version__ = "0.1.0"

from .batch import RunOptions, arun, run
from .batch import plan_file as plan
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
from .manifest import load_manifest

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
