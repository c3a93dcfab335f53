"""runner: YAML manifest → many Evolink image jobs → verified files and a results table."""

from __future__ import annotations

__version__ = "0.1.0"

from .batch import RunOptions, arun, plan_file as plan, run  # noqa: E402
from .errors import (  # noqa: E402
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
from .expand import Job, Plan  # noqa: E402
from .manifest import load_manifest  # noqa: E402

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
