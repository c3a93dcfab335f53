"""Memory benchmark: peak resident memory of runner processes on a large CSV, as ratios
to a 1 GB budget (and the time of each, for reference).

    python benchmarks/bench_memory.py              # 1,000,000 rows, ~5 minutes
    python benchmarks/bench_memory.py --rows 100000

Each command runs in its own process; its peak comes from wait4()'s rusage. It also
checks that the 8 shard plans hold every job exactly once, and merges 8 shard dirs cut
from the streamed run's output (every job pending: the tables are full size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BUDGET_MB = 1024


def measure(args: list[str], cwd: Path) -> tuple[float, float, bytes]:
    """Seconds, peak MB and stdout of ``runner ARGS``."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        raise SystemExit(f"runner {' '.join(args)} exited {process.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, output


def write_inputs(folder: Path, rows: int) -> Path:
    with (folder / "rows.csv").open("w", encoding="utf-8") as handle:
        handle.write("id,subject,style\n")
        for i in range(rows):
            style = ("studio", "outdoor", "flat")[i % 3]
            handle.write(f"{i},a red bicycle number {i} leaning on a wall,{style}\n")
    manifest = folder / "big.yaml"
    manifest.write_text(
        "version: 1\nname: big\nrows: rows.csv\n"
        "prompt: 'A {{ style }} photo of {{ subject }}'\n"
        "request: {size: '1024x1024', quality: low}\nfilename: '{{ id }}.png'\n",
        encoding="utf-8",
    )
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    rows = parser.parse_args().rows
    print(f"| command ({rows:,} rows) | seconds | peak MB | ratio to {BUDGET_MB} MB |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        manifest = str(write_inputs(folder, rows))
        commands = {
            "plan --json": ["plan", manifest, "--json"],
            "plan --shard 3/8 --json": ["plan", manifest, "--shard", "3/8", "--json"],
            "run --limit 5 --fake": ["run", manifest, "--limit", "5", "--fake", "--out", "a"],
            "run --fake --max-credits 0.001 (streams every job, writes every row)": [
                *("run", manifest, "--fake", "--max-credits", "0.001", "--out", "b"),
            ],
        }
        everything: list[str] = []
        for label, args in commands.items():
            seconds, peak, output = measure(args, folder)
            if label == "plan --json":
                everything = json.loads(output)["job_ids"]
            print(f"| {label} | {seconds:.1f} | {peak:.0f} | {peak / BUDGET_MB:.2f} |")
        shards: list[str] = []
        worst = 0.0
        for k in range(8):
            _, peak, output = measure(["plan", manifest, "--shard", f"{k}/8", "--json"], folder)
            shards += json.loads(output)["job_ids"]
            worst = max(worst, peak)
        once = len(shards) == len(set(shards)) and set(shards) == set(everything)
        print(
            f"| 8 shard plans: every job exactly once: {once} | | {worst:.0f} (worst) | "
            f"{worst / BUDGET_MB:.2f} |"
        )
        parts = cut_into_shards(folder / "b", 8)
        seconds, peak, _ = measure(["merge", *parts, "--out", "merged", "-m", manifest], folder)
        same = (folder / "merged" / "results.csv").read_bytes() == (
            folder / "b" / "results.csv"
        ).read_bytes()
        print(
            f"| merge of 8 shard dirs -m (results.csv same as the run's: {same}) | "
            f"{seconds:.1f} | {peak:.0f} | {peak / BUDGET_MB:.2f} |"
        )


def cut_into_shards(run_dir: Path, count: int) -> list[str]:
    """Shard dirs made from one run's outputs, split by job id as --shard splits."""
    table = pq.read_table(run_dir / "results.parquet")
    shard = [int(job_id, 16) % count for job_id in table.column("job_id").to_pylist()]
    parts = []
    for k in range(count):
        folder = run_dir.parent / f"shard-{k}"
        folder.mkdir()
        pq.write_table(table.filter(pc.equal(pa.array(shard), k)), folder / "results.parquet")
        for name in ("run.json", "state.sqlite", "files.json"):
            shutil.copyfile(run_dir / name, folder / name)
        parts.append(str(folder))
    return parts


if __name__ == "__main__":
    main()
