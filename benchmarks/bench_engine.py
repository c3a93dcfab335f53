"""Engine benchmark: the runner against the fake API, as ratios to the ideal and to a
naive script (a semaphore with fixed 1-second polling) run in the same process.

    python benchmarks/bench_engine.py            # all scenarios, ~1 minute
    python benchmarks/bench_engine.py --quick    # smaller batches

Busy time = first submission to the last completion the client saw (measured by the
fake server). Ideal = the same tasks' durations packed into the slots with no overhead.
"""

from __future__ import annotations

import argparse
import heapq
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from runner.batch import RunOptions, run_plan
from runner.expand import plan_file
from runner.fake import FakeEvolink, FakeOptions, create_app
from runner.progress import Reporter

BASE = "http://fake.bench"


@dataclass
class Measure:
    busy: float
    submissions: int
    throttled: int
    polls: int
    detection: float  # mean seconds from a task's end to the client seeing it


def measure(fake: FakeEvolink) -> Measure:
    tasks = list(fake.tasks.values())
    first = min(fake.submit_times)
    seen = fake.completion_seen
    last = max(seen.values())
    detection = statistics.mean(seen[t.id] - t.finished for t in tasks if t.id in seen)
    return Measure(
        last - first,
        fake.counts["submissions"],
        fake.counts["submit_429"],
        fake.counts["polls"],
        detection,
    )


def ideal_busy(durations: list[float], slots: int) -> float:
    free = [0.0] * slots
    end = 0.0
    for duration in durations:
        start = heapq.heappop(free)
        end = max(end, start + duration)
        heapq.heappush(free, start + duration)
    return end


def write_manifest(folder: Path, jobs: int, concurrency: int) -> Path:
    path = folder / "m.yaml"
    path.write_text(
        f"version: 1\nname: bench\nrows: [{{x: 0}}]\nrepeat: {jobs}\n"
        "prompt: 'bench image {{ sample }}'\nrequest: {size: '1:1', quality: low}\n"
        f"limits: {{concurrency: {concurrency}}}\n",
        encoding="utf-8",
    )
    return path


async def run_runner(options: FakeOptions, jobs: int, concurrency: int) -> FakeEvolink:
    app = create_app(options)
    with tempfile.TemporaryDirectory() as folder:
        plan = plan_file(write_manifest(Path(folder), jobs, concurrency))
        await run_plan(
            plan,
            RunOptions(
                out=Path(folder) / "out",
                base_url=BASE,
                api_key="bench",
                transport=httpx.ASGITransport(app=app),
                reporter=Reporter(),
                handle_signals=False,
            ),
        )
    fake: FakeEvolink = app.state.fake
    return fake


async def run_naive(options: FakeOptions, jobs: int, concurrency: int) -> FakeEvolink:
    """What people write first: a semaphore, submit, poll every second, download.
    (A fresh fake with the same options and seed: the same task durations.)"""
    app = create_app(options)
    limit = anyio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=BASE,
        transport=httpx.ASGITransport(app=app),
        headers={"Authorization": "Bearer bench"},
    ) as client:

        async def one(index: int) -> None:
            async with limit:
                while True:
                    answer = await client.post(
                        "/v1/images/generations",
                        json={
                            "model": "gpt-image-1.5-beta",
                            "prompt": f"bench image {index}",
                            "size": "1:1",
                            "quality": "low",
                        },
                    )
                    if answer.status_code == 200:
                        break
                    await anyio.sleep(1)
                task_id = answer.json()["id"]
                while True:
                    await anyio.sleep(1)
                    task = (await client.get(f"/v1/tasks/{task_id}")).json()
                    if task.get("status") in ("completed", "failed"):
                        break
            if task.get("results"):
                await client.get(task["results"][0])

        async with anyio.create_task_group() as group:
            for index in range(jobs):
                group.start_soon(one, index)
    fake: FakeEvolink = app.state.fake
    return fake


def row(
    name: str, figure: str, ratio_ideal: float | None, ratio_naive: float | None, target: str
) -> str:
    ideal = f"{ratio_ideal:.3f}" if ratio_ideal is not None else "-"
    naive = f"{ratio_naive:.3f}" if ratio_naive is not None else "-"
    return f"| {name} | {figure} | {ideal} | {naive} | {target} |"


def scenario_concurrency(scale: float) -> str:
    jobs, slots = int(200 * scale), 50
    options = FakeOptions(task_seconds=(1.0, 2.0), small_images=True, seed=11)
    mine = anyio.run(run_runner, options, jobs, slots)
    m, n = measure(mine), measure(anyio.run(run_naive, options, jobs, slots))
    ideal = ideal_busy([t.duration for t in mine.tasks.values()], slots)
    return row(
        f"{jobs} jobs, tasks 1-2 s, {slots} in flight: busy time",
        f"{m.busy:.2f} s (ideal {ideal:.2f}, naive {n.busy:.2f})",
        m.busy / ideal,
        m.busy / n.busy,
        "<= 1.1 x ideal, <= 0.9 x naive",
    )


def scenario_rate(scale: float) -> str:
    jobs, rate = int(120 * scale), 8.0
    options = FakeOptions(
        task_seconds=(1.0, 2.0), small_images=True, seed=12, rate_limit=rate, burst=4
    )
    mine = measure(anyio.run(run_runner, options, jobs, 20))
    naive = measure(anyio.run(run_naive, options, jobs, 20))
    ideal = jobs / rate
    share = mine.throttled / (mine.submissions + mine.throttled)
    return row(
        f"{jobs} jobs, API allows {rate:g}/s burst 4, no rate given: busy time",
        f"{mine.busy:.2f} s, {share:.1%} answered 429 (naive {naive.busy:.2f} s)",
        mine.busy / ideal,
        mine.busy / naive.busy,
        "<= 1.15 x jobs/rate, <= 5% 429",
    )


def scenario_polling(scale: float) -> list[str]:
    jobs = int(60 * scale)
    options = FakeOptions(task_seconds=(2.0, 6.0), small_images=True, seed=13)
    mine = measure(anyio.run(run_runner, options, jobs, jobs))
    naive = measure(anyio.run(run_naive, options, jobs, jobs))
    return [
        row(
            f"{jobs} jobs of 2-6 s: polls per task",
            f"{mine.polls / jobs:.2f} (naive {naive.polls / jobs:.2f})",
            None,
            (mine.polls / jobs) / (naive.polls / jobs),
            "<= 2.5",
        ),
        row(
            f"{jobs} jobs of 2-6 s: completion noticed after",
            f"{mine.detection:.3f} s (naive {naive.detection:.3f} s)",
            None,
            mine.detection / naive.detection,
            "<= 0.25 s",
        ),
    ]


def scenario_plan(scale: float) -> str:
    rows = int(100_000 * scale)
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        with (base / "rows.csv").open("w", encoding="utf-8") as handle:
            handle.write("sku,name,aspect\n")
            for i in range(rows):
                handle.write(f"SKU-{i:06d},Product {i},{['1:1', '2:3', '3:2'][i % 3]}\n")
        (base / "m.yaml").write_text(
            "version: 1\nname: big\nrows: rows.csv\nprompt: 'A photo of {{ name }} "
            "({{ sku }})'\nrequest: {size: '{{ aspect }}', quality: low}\n"
            "filename: '{{ sku }}.png'\n",
            encoding="utf-8",
        )
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "runner", "plan", str(base / "m.yaml"), "--json"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return row(
        f"plan of a {rows:,}-row CSV",
        f"{elapsed:.2f} s, {peak_mb:.0f} MB peak",
        elapsed / 3.0,
        None,
        "< 3 s, < 400 MB (ratio: to 3 s)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="quarter-size batches")
    scale = 0.25 if parser.parse_args().quick else 1.0
    print("| scenario | measured | ratio to ideal | ratio to naive | target |")
    print("|---|---|---|---|---|")
    for line in [
        scenario_concurrency(scale),
        scenario_rate(scale),
        *scenario_polling(scale),
        scenario_plan(scale),
    ]:
        print(line, flush=True)


if __name__ == "__main__":
    main()
