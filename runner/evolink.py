"""Everything runner knows about the Evolink image API, in one place to correct.

Sources: the provider's API document (the seed) and its task-management docs
(task query, result links, failure codes), as summarised in DESIGN.md.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import (
    ApiError,
    BadRequest,
    FatalApiError,
    NetworkError,
    RateLimited,
    ServerError,
    TaskNotFound,
)

DEFAULT_BASE_URL = "https://api.evolink.ai"
GENERATIONS_PATH = "/v1/images/generations"
TASKS_PATH = "/v1/tasks/"

MODEL = "gpt-image-1.5-beta"
MODEL_ALIASES = {"gpt-image-1.5-lite": MODEL}
SIZES = ("1:1", "2:3", "3:2", "1024x1024", "1024x1536", "1536x1024")
QUALITIES = ("low", "medium", "high", "auto")
DEFAULT_QUALITY = "auto"
PROMPT_MAX_CHARS = 2000
IMAGE_URLS_MAX = 16
CALLBACK_URL_MAX_CHARS = 2048
REQUEST_FIELDS = ("size", "quality", "image_urls", "n", "callback_url")
LINK_LIFETIME_S = 24 * 3600

# Pixel size the API produces for each ``size``; aspect-only sizes map to the same pixels.
SIZE_PIXELS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "2:3": (1024, 1536),
    "3:2": (1536, 1024),
    "1024x1024": (1024, 1024),
    "1024x1536": (1024, 1536),
    "1536x1024": (1536, 1024),
}

FINAL_OK = "completed"
IN_PROGRESS = frozenset({"pending", "processing"})

# Task failure codes a user must fix; sending the same request again cannot help.
USER_FIXABLE_CODES = frozenset(
    {
        "content_policy_violation",
        "invalid_parameters",
        "image_processing_error",
        "image_dimension_mismatch",
        "request_cancelled",
    }
)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 402, 403})


def canonical_model(model: str) -> str:
    """Map the legacy alias to the model the API actually runs."""
    return MODEL_ALIASES.get(model, model)


def task_failure_is_retryable(code: str | int | None) -> bool:
    """A failed task is worth resubmitting unless its code says the user must fix it."""
    return str(code) not in USER_FIXABLE_CODES


def request_problems(request: Mapping[str, Any]) -> list[tuple[str, str]]:
    """List (field, problem) for every way ``request`` breaks the API's rules."""
    problems: list[tuple[str, str]] = []
    model = request.get("model")
    if canonical_model(str(model)) != MODEL:
        allowed = ", ".join([MODEL, *MODEL_ALIASES])
        problems.append(("model", f"{model!r} is not a supported model ({allowed})"))
    prompt = request.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problems.append(("prompt", "the prompt is empty"))
    elif len(prompt) > PROMPT_MAX_CHARS:
        problems.append(
            ("prompt", f"the prompt has {len(prompt)} characters, the API takes {PROMPT_MAX_CHARS}")
        )
    if "size" in request and request["size"] not in SIZES:
        problems.append(("size", f"{request['size']!r} is not one of {', '.join(SIZES)}"))
    if "quality" in request and request["quality"] not in QUALITIES:
        problems.append(("quality", f"{request['quality']!r} is not one of {', '.join(QUALITIES)}"))
    if "n" in request and (request["n"] != 1 or isinstance(request["n"], bool)):
        problems.append(("n", f"{request['n']!r}: the API generates exactly 1 image per task"))
    if "image_urls" in request:
        problems.extend(_image_url_problems(request["image_urls"]))
    if "callback_url" in request:
        problem = _callback_problem(request["callback_url"])
        if problem:
            problems.append(("callback_url", problem))
    return problems


def _image_url_problems(urls: Any) -> list[tuple[str, str]]:
    if not isinstance(urls, list):
        return [("image_urls", f"expected a list of URLs, got {urls!r}")]
    if not 1 <= len(urls) <= IMAGE_URLS_MAX:
        return [("image_urls", f"{len(urls)} URLs given, the API takes 1 to {IMAGE_URLS_MAX}")]
    problems = []
    for i, url in enumerate(urls):
        if not isinstance(url, str) or not _is_http_url(url):
            problems.append((f"image_urls[{i}]", f"{url!r} is not an http(s) URL"))
    return problems


def _callback_problem(url: Any) -> str | None:
    if not isinstance(url, str) or not _is_http_url(url):
        return f"{url!r} is not a URL"
    if len(url) > CALLBACK_URL_MAX_CHARS:
        return f"the URL has {len(url)} characters, the API takes {CALLBACK_URL_MAX_CHARS}"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return f"{url!r}: the API calls back over HTTPS only"
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost") or _is_internal_ip(host):
        return f"{url!r}: the API does not call internal addresses"
    return None


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url


def _is_internal_ip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip.is_global


@dataclass(frozen=True)
class Task:
    """The API's task object, reduced to what runner acts on."""

    id: str
    status: str
    progress: int = 0
    estimated_time: float | None = None
    results: tuple[str, ...] = ()
    error_code: str | int | None = None
    error_message: str = ""
    credits: float | None = None

    @property
    def is_final(self) -> bool:
        """Unknown statuses (e.g. ``cancelled``) are final too, and count as failed."""
        return self.status not in IN_PROGRESS

    @property
    def succeeded(self) -> bool:
        return self.status == FINAL_OK and bool(self.results)

    @classmethod
    def from_json(cls, data: Any) -> Task:
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
            raise ServerError(200, "bad_response", "the API answered without a task id")
        info = data.get("task_info") or {}
        usage = data.get("usage") or {}
        error = data.get("error") or {}
        results = data.get("results") or ()
        estimated = info.get("estimated_time") if isinstance(info, Mapping) else None
        credits = usage.get("credits_reserved") if isinstance(usage, Mapping) else None
        return cls(
            id=data["id"],
            status=str(data.get("status") or "pending"),
            progress=_as_int(data.get("progress")),
            estimated_time=_as_float(estimated),
            results=tuple(str(u) for u in results if isinstance(u, str)),
            error_code=error.get("code") if isinstance(error, Mapping) else None,
            error_message=str(error.get("message", "")) if isinstance(error, Mapping) else "",
            credits=_as_float(credits),
        )


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _as_int(value: Any) -> int:
    number = _as_float(value)
    return int(number) if number is not None else 0


def parse_retry_after(value: str | None) -> float | None:
    """Read ``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import datetime, timezone

        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def error_from_response(response: httpx.Response, *, secret: str | None = None) -> ApiError:
    """Build the ApiError that matches an error response; never echo the key back."""
    code: str | int | None = None
    message = ""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            message = str(error.get("message") or "")
    except ValueError:
        message = response.text[:200]
    if secret:
        message = message.replace(secret, "***")
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    cls: type[ApiError]
    if status == 429:
        cls = RateLimited
    elif status in FATAL_STATUS:
        cls = FatalApiError
    elif status >= 500:
        cls = ServerError
    else:
        cls = BadRequest
    return cls(status, code, message or response.reason_phrase, retry_after=retry_after)


class _BearerForApiHost(httpx.Auth):
    """Sends the key to the API host only: result links elsewhere never see it."""

    def __init__(self, api_key: str, base_url: str) -> None:
        self._header = f"Bearer {api_key}"
        self._origin = httpx.URL(base_url).netloc

    def __repr__(self) -> str:
        return "_BearerForApiHost('***')"

    def auth_flow(self, request: httpx.Request) -> Any:
        if request.url.netloc == self._origin:
            request.headers["Authorization"] = self._header
        yield request


class EvolinkClient:
    """The one way runner talks to the API; tests swap the transport, never this class."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=_BearerForApiHost(api_key, self.base_url),
            headers={"User-Agent": "runner"},
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=15.0),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=True,
        )

    def __repr__(self) -> str:
        return f"EvolinkClient(base_url={self.base_url!r}, api_key='***')"

    async def __aenter__(self) -> EvolinkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(self, request: Mapping[str, Any]) -> Task:
        """Create a task; raises an ApiError subclass or NetworkError."""
        return Task.from_json(await self._call("POST", GENERATIONS_PATH, json=dict(request)))

    async def get_task(self, task_id: str) -> Task:
        """Query a task; a 404 raises TaskNotFound (unknown or expired)."""
        try:
            return Task.from_json(await self._call("GET", TASKS_PATH + task_id))
        except BadRequest as error:
            if error.status in (404, 410):
                raise TaskNotFound(error.status, error.code, error.message) from None
            raise

    @asynccontextmanager
    async def stream(self, url: str) -> AsyncIterator[httpx.Response]:
        """Stream a result file (the key goes only to the API's own host)."""
        try:
            async with self._http.stream("GET", url) as response:
                yield response
        except httpx.TransportError as error:
            raise NetworkError(f"download failed: {type(error).__name__}: {error}") from None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise NetworkError(f"{method} {path}: {type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise error_from_response(response, secret=self._api_key)
        try:
            return response.json()
        except ValueError:
            raise ServerError(response.status_code, "bad_response", "not JSON") from None
