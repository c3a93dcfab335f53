"""Running a manifest in process against the fake server, at test speed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pandas as pd

from runner.batch import RunOptions, run_plan
from runner.errors import RunStopped
from runner.expand import plan_file
from runner.fake import FakeEvolink, FakeOptions, create_app

from conftest import API_KEY, FAST


@dataclass
class Outcome:
    frame: pd.DataFrame
    error: RunStopped | None
    fake: FakeEvolink
    out: Path


class FakeApi:
    """One fake server that several runs (a run, then its rerun) talk to."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("task_seconds", (0.01, 0.05))
        options.setdefault("small_images", True)
        options.setdefault("seed", 7)
        self.app = create_app(FakeOptions(**options))
        self.fake: FakeEvolink = self.app.state.fake

    def run(self, manifest: Path, out: Path, **run_options: Any) -> Outcome:
        run_options.setdefault("timing", FAST)
        run_options.setdefault("api_key", API_KEY)
        options = RunOptions(
            out=out,
            base_url="http://fake.test",
            transport=httpx.ASGITransport(app=self.app),
            handle_signals=False,
            **run_options,
        )
        plan = plan_file(manifest)
        try:
            frame = anyio.run(run_plan, plan, options)
            return Outcome(frame, None, self.fake, out)
        except RunStopped as stopped:
            return Outcome(stopped.results, stopped, self.fake, out)


def write_manifest(folder: Path, rows: int, *, repeat: int = 1, extra: str = "") -> Path:
    (folder / "rows.csv").write_text(
        "name\n" + "".join(f"thing {i}\n" for i in range(rows)), encoding="utf-8"
    )
    path = folder / "m.yaml"
    path.write_text(
        "version: 1\nname: faults\nrows: rows.csv\n"
        f"repeat: {repeat}\n"
        "prompt: 'A picture of {{ name }}, sample {{ sample }}'\n"
        "request: {size: '3:2', quality: medium}\n" + extra,
        encoding="utf-8",
    )
    return path
