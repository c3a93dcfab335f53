"""Object-store benchmark: the same batch into a local dir and into S3 (moto's server on
loopback, started here), as a ratio of wall times in one process.

    python benchmarks/bench_objectstore.py            # 300 jobs
    python benchmarks/bench_objectstore.py --jobs 100

Needs the test extras (moto). The fake API draws full-size PNGs, so uploads carry
realistic sizes (~20-40 kB each here).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import runner
from runner.fake import FakeOptions
from runner.objectstore import ObjectStoreDir
from runner.policy import Timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    jobs = parser.parse_args().jobs

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        os.environ["RUNNER_STAGING_DIR"] = str(folder / "staging")
        (folder / "rows.csv").write_text(
            "n\n" + "".join(f"{i}\n" for i in range(jobs)), encoding="utf-8"
        )
        manifest = folder / "m.yaml"
        manifest.write_text(
            "version: 1\nname: bench\nrows: rows.csv\nprompt: 'thing {{ n }}'\n"
            "request: {size: '1024x1024', quality: low}\nlimits: {concurrency: 50}\n",
            encoding="utf-8",
        )
        options = {
            "fake": True,
            "timing": Timing().scaled(0.1),
            "fake_options": FakeOptions(task_seconds=(0.2, 0.6), seed=1),
            "sync_interval": 1.0,
        }
        results = {}
        for label, out in (("local dir", str(folder / "local")), ("s3 (moto)", "s3://bench/run")):
            started = time.perf_counter()
            frame = runner.run(manifest, out=out, **options)
            results[label] = time.perf_counter() - started
            assert frame is not None and (frame["status"] == "completed").all()
        stored = ObjectStoreDir("s3://bench/run").sizes("images")
        assert len(stored) == jobs
    server.stop()
    local = results["local dir"]
    print(f"| {jobs} jobs, --out | seconds | ratio to local |")
    print("|---|---|---|")
    for label, seconds in results.items():
        print(f"| {label} | {seconds:.2f} | {seconds / local:.2f} |")


if __name__ == "__main__":
    main()
