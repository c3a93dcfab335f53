"""Shared fixtures: manifests on disk, the fake server on loopback, fast timings."""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from runner.fake import FakeEvolink, FakeOptions, create_app
from runner.policy import Timing

FAST = Timing().scaled(0.02)
API_KEY = "sk-test-0123456789abcdef-SECRET"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write files under tmp_path (dedented text or bytes); returns the first path."""

    def _write(name: str, content: str | bytes, **more: str | bytes) -> Path:
        first = None
        for filename, data in {name: content, **more}.items():
            path = tmp_path / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(textwrap.dedent(data).lstrip("\n"), encoding="utf-8")
            first = first or path
        assert first is not None
        return first

    return _write


@dataclass
class LoopbackFake:
    url: str
    fake: FakeEvolink


@pytest.fixture
def loopback() -> Iterator[Callable[..., LoopbackFake]]:
    """Start fake servers on 127.0.0.1 with the given options; stopped after the test."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def _start(**options: object) -> LoopbackFake:
        app = create_app(FakeOptions(**options))  # type: ignore[arg-type]
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "fake server did not start"
            time.sleep(0.01)
        servers.append((server, thread))
        return LoopbackFake(f"http://127.0.0.1:{port}", app.state.fake)

    yield _start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class LocalS3:
    endpoint: str
    bucket: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    """moto's S3 server on 127.0.0.1, started here; the AWS environment points at it (so
    runner processes started by tests use it too) and one bucket exists."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            patch.setenv(name, value)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="runner-test")
        yield LocalS3(endpoint, "runner-test")
    server.stop()
