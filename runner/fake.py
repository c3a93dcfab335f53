"""A fake Evolink server: the API's routes, validation, error bodies and task lifecycle,
with real PNGs and options that inject faults. Serves ``run --fake`` (in process,
through ``httpx.ASGITransport``), ``runner fake-server`` (loopback HTTP), the tests and
the benchmarks.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .evolink import GENERATIONS_PATH, MODEL, SIZE_PIXELS, request_problems

ERROR_TYPES = {
    400: ("invalid_request", "invalid_request_error"),
    401: ("unauthorized", "authentication_error"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("model_access_denied", "invalid_request_error"),
    404: ("not_found", "invalid_request_error"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
    500: ("internal_error", "api_error"),
    503: ("service_unavailable", "api_error"),
}
CREDITS = {"low": 1.0, "medium": 2.5, "high": 6.0, "auto": 2.5}
ESTIMATES = ("ceil", "floor", "round", "constant", "none")


@dataclass
class FakeOptions:
    """Behaviour and faults of the fake server; the defaults behave like a healthy API."""

    api_key: str | None = None  # when set, any other key is answered 401
    refuse_status: int | None = None  # answer every submission with 401/402/403
    task_seconds: tuple[float, float] = (1.0, 3.0)  # how long tasks take (uniform)
    latency: float = 0.0  # added to every request, seconds
    jitter: float = 0.0  # random extra latency, up to this many seconds
    fail_rate: float = 0.0  # share of tasks that end ``failed``
    fail_code: str = "service_error"  # their error code
    error_rate: float = 0.0  # share of submissions and polls answered 500
    truncate_rate: float = 0.0  # share of downloads cut short
    rate_limit: float | None = None  # submissions per second before 429
    burst: int = 1  # token bucket size for ``rate_limit``
    whole_retry_after: bool = False  # Retry-After in whole seconds (rounded up), not exact
    max_in_progress: int | None = None  # unfinished tasks allowed before 429
    link_ttl: float = 24 * 3600  # seconds a result link (and the task) lives
    small_images: bool = False  # 1/16 of the real pixel size, for fast tests
    estimate: str = "ceil"  # estimated_time: ceil/floor/round of the remaining time, or
    # "constant" (always 100 s, as in the API's example), or "none" (left out)
    linear_progress: bool = True  # progress grows with time; False: 0 until done
    seed: int | None = None


@dataclass
class _Task:
    id: str
    request: dict[str, Any]
    created: float
    duration: float
    fails: bool
    credits: float
    finished: float = field(init=False)

    def __post_init__(self) -> None:
        self.finished = self.created + self.duration


class FakeEvolink:
    """The server's state: tasks, the rate bucket, counters for tests and benchmarks."""

    def __init__(self, options: FakeOptions | None = None) -> None:
        self.options = options or FakeOptions()
        self.random = random.Random(self.options.seed)
        self.tasks: dict[str, _Task] = {}
        self.counts: Counter[str] = Counter()
        self.submitted: list[dict[str, Any]] = []  # bodies of accepted submissions
        self.submit_times: list[float] = []
        self.completion_seen: dict[str, float] = {}  # task id → first poll that saw it final
        self._ids = itertools.count(1)
        self._tokens = float(self.options.burst)
        self._bucket_time = time.monotonic()

    # -- the API ---------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        self.counts["submit_requests"] += 1
        await self._delay()
        denied = self._auth(request)
        if denied:
            return denied
        if self.options.refuse_status:
            return self._error(self.options.refuse_status)
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "the body is not JSON")
        if not isinstance(body, dict):
            return self._error(400, "the body must be a JSON object")
        problems = request_problems(body)
        if problems:
            key, problem = problems[0]
            return self._error(400, f"{key}: {problem}", code="invalid_parameters")
        if self._fault(self.options.error_rate):
            return self._error(500)
        wait = self._take_token()
        if wait is not None:
            self.counts["submit_429"] += 1
            header = str(math.ceil(wait)) if self.options.whole_retry_after else f"{wait:.3f}"
            return self._error(429, headers={"Retry-After": header})
        if self._too_many_in_progress():
            self.counts["submit_429"] += 1
            return self._error(429, "too many tasks in progress", headers={"Retry-After": "1"})
        task = self._create(body)
        return JSONResponse(self._task_json(task, request))

    async def get_task(self, request: Request) -> Response:
        self.counts["polls"] += 1
        await self._delay()
        denied = self._auth(request)
        if denied:
            return denied
        task = self._live_task(request.path_params["task_id"])
        if task is None:
            return self._error(404, "task not found or expired", code="task_not_found")
        if self._fault(self.options.error_rate):
            return self._error(500)
        data = self._task_json(task, request)
        if data["status"] in ("completed", "failed"):
            self.completion_seen.setdefault(task.id, time.monotonic())
        return JSONResponse(data)

    async def download(self, request: Request) -> Response:
        self.counts["downloads"] += 1
        await self._delay()
        task = self._live_task(request.path_params["task_id"])
        if task is None or task.fails or time.monotonic() < task.finished:
            return self._error(404, "file not found or expired", code="file_not_found")
        data = self._image(task)
        if self._fault(self.options.truncate_rate):
            self.counts["downloads_truncated"] += 1
            data = data[: max(8, len(data) // 2)]
        return Response(data, media_type="image/png")

    async def stats(self, request: Request) -> Response:
        return JSONResponse({"counts": dict(self.counts), "tasks": len(self.tasks)})

    # -- internals ---------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> _Task:
        low, high = self.options.task_seconds
        now = time.monotonic()
        task_id = f"task-unified-{int(time.time())}-{next(self._ids):06d}"
        quality = str(body.get("quality") or "auto")
        task = _Task(
            task_id,
            body,
            now,
            self.random.uniform(low, high),
            self._fault(self.options.fail_rate),
            CREDITS.get(quality, 2.5),
        )
        self.tasks[task_id] = task
        self.submitted.append(body)
        self.submit_times.append(now)
        self.counts["submissions"] += 1
        return task

    def _task_json(self, task: _Task, request: Request) -> dict[str, Any]:
        now = time.monotonic()
        elapsed = now - task.created
        if now >= task.finished:
            status = "failed" if task.fails else "completed"
        else:
            status = "pending" if elapsed < min(0.2, task.duration / 10) else "processing"
        data: dict[str, Any] = {
            "created": int(time.time() - elapsed),
            "id": task.id,
            "model": MODEL,
            "object": "image.generation.task",
            "progress": 100
            if status == "completed"
            else (int(100 * elapsed / task.duration) if self.options.linear_progress else 0),
            "status": status,
            "task_info": {
                "can_cancel": status in ("pending", "processing"),
                "estimated_time": self._estimate(task.duration - elapsed)
                if status != "completed"
                else 0,
            },
            "type": "image",
            "usage": {
                "billing_rule": "per_call",
                "credits_reserved": task.credits,
                "user_group": "default",
            },
        }
        if status == "completed":
            base = str(request.base_url).rstrip("/")
            token = hashlib.sha256(task.id.encode()).hexdigest()[:12]
            data["results"] = [f"{base}/files/{task.id}.png?token={token}"]
        elif status == "failed":
            data["error"] = {"code": self.options.fail_code, "message": "generation failed"}
        return data

    def _estimate(self, remaining: float) -> int | None:
        remaining = max(0.0, remaining)
        kind = self.options.estimate
        if kind == "none":
            return None
        if kind == "constant":
            return 100
        if kind == "floor":
            return math.floor(remaining)
        if kind == "round":
            return round(remaining)
        return math.ceil(remaining)

    def _live_task(self, task_id: str) -> _Task | None:
        task = self.tasks.get(task_id.removesuffix(".png"))
        if task is None or time.monotonic() > task.finished + self.options.link_ttl:
            return None
        return task

    def _image(self, task: _Task) -> bytes:
        """Drawn on each download (not kept: a long fake run must not grow)."""
        return render_png(
            str(task.request.get("size") or "1:1"),
            task.request.get("prompt", "") + task.id,
            small=self.options.small_images,
        )

    def _auth(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return self._error(401, "missing bearer token")
        if self.options.api_key is not None and key != self.options.api_key:
            return self._error(401, "Invalid or expired token")
        return None

    def _take_token(self) -> float | None:
        """Token bucket for ``rate_limit``: None if a submission may pass, else the wait."""
        rate = self.options.rate_limit
        if not rate:
            return None
        now = time.monotonic()
        self._tokens = min(self.options.burst, self._tokens + (now - self._bucket_time) * rate)
        self._bucket_time = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / rate

    def _too_many_in_progress(self) -> bool:
        cap = self.options.max_in_progress
        if cap is None:
            return False
        now = time.monotonic()
        return sum(1 for t in self.tasks.values() if t.finished > now) >= cap

    def _fault(self, rate: float) -> bool:
        return rate > 0 and self.random.random() < rate

    async def _delay(self) -> None:
        extra = self.random.uniform(0, self.options.jitter) if self.options.jitter else 0.0
        if self.options.latency or extra:
            await anyio.sleep(self.options.latency + extra)

    def _error(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        default_code, kind = ERROR_TYPES.get(status, ("error", "api_error"))
        body = {
            "error": {
                "code": code or default_code,
                "message": message or f"fake error {status}",
                "type": kind,
            }
        }
        return JSONResponse(body, status_code=status, headers=headers)


def create_app(options: FakeOptions | None = None) -> Starlette:
    """The fake server as an ASGI app; ``app.state.fake`` holds its state."""
    fake = FakeEvolink(options)
    app = Starlette(
        routes=[
            Route(GENERATIONS_PATH, fake.submit, methods=["POST"]),
            Route("/v1/tasks/{task_id}", fake.get_task, methods=["GET"]),
            Route("/files/{task_id}", fake.download, methods=["GET"]),
            Route("/_fake/stats", fake.stats, methods=["GET"]),
        ]
    )
    app.state.fake = fake
    return app


def render_png(size: str, seed_text: str, *, small: bool = False) -> bytes:
    """A real PNG of the size the API makes for ``size``, its colours drawn from the text."""
    from PIL import Image, ImageDraw

    width, height = SIZE_PIXELS.get(size, (1024, 1024))
    if small:
        width, height = width // 16, height // 16
    digest = hashlib.sha256(seed_text.encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    draw = ImageDraw.Draw(image)
    draw.rectangle(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=tuple(digest[3:6])
    )
    draw.ellipse(
        (width // 3, height // 3, 2 * width // 3, 2 * height // 3), fill=tuple(digest[6:9])
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def serve(options: FakeOptions, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve the fake over loopback HTTP until interrupted."""
    import uvicorn

    uvicorn.run(create_app(options), host=host, port=port, log_level="warning")
