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
