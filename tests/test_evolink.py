"""The API client: error mapping, task parsing, where the key goes."""

from __future__ import annotations

import httpx
import pytest

from runner.errors import (
    BadRequest,
    FatalApiError,
    NetworkError,
    RateLimited,
    ServerError,
    TaskNotFound,
)
from runner.evolink import EvolinkClient, Task, parse_retry_after, request_problems

KEY = "sk-secret-value"


def client_for(handler) -> EvolinkClient:
    return EvolinkClient("https://api.test", KEY, transport=httpx.MockTransport(handler))


def error(status: int, code, headers=None):
    return lambda request: httpx.Response(
        status, json={"error": {"code": code, "message": f"m {KEY}", "type": "t"}}, headers=headers
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (401, FatalApiError),
        (402, FatalApiError),
        (403, FatalApiError),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
    ],
)
async def test_error_statuses_map_to_the_exception_tree(status, kind):
    async with client_for(error(status, "some_code")) as client:
        with pytest.raises(kind) as caught:
            await client.submit({"model": "m", "prompt": "p"})
    assert caught.value.status == status
    assert KEY not in str(caught.value)


@pytest.mark.anyio
async def test_retry_after_and_numeric_codes_are_read():
    async with client_for(error(429, 1002, {"Retry-After": "3"})) as client:
        with pytest.raises(RateLimited) as caught:
            await client.submit({"prompt": "p"})
    assert caught.value.retry_after == 3.0 and caught.value.code == 1002


@pytest.mark.anyio
async def test_404_on_a_task_query_means_not_found_or_expired():
    async with client_for(error(404, "not_found")) as client:
        with pytest.raises(TaskNotFound):
            await client.get_task("t1")


@pytest.mark.anyio
async def test_network_errors_become_network_error():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    async with client_for(refuse) as client:
        with pytest.raises(NetworkError):
            await client.get_task("t1")


@pytest.mark.anyio
async def test_key_goes_to_the_api_host_only():
    seen = {}

    def handler(request: httpx.Request):
        seen[request.url.host] = request.headers.get("authorization")
        if request.url.host == "api.test":
            return httpx.Response(200, json={"id": "t", "status": "pending"})
        return httpx.Response(200, content=b"x")

    async with client_for(handler) as client:
        await client.get_task("t")
        async with client.stream("https://cdn.test/x.png") as response:
            await response.aread()
    assert seen == {"api.test": f"Bearer {KEY}", "cdn.test": None}
    assert KEY not in repr(client)


def test_task_parsing_reads_results_errors_and_estimates():
    task = Task.from_json(
        {
            "id": "t",
            "status": "failed",
            "task_info": {"estimated_time": 12},
            "error": {"code": "service_error", "message": "x"},
            "usage": {"credits_reserved": 2.5},
        }
    )
    assert (task.is_final, task.succeeded, task.error_code, task.estimated_time, task.credits) == (
        True,
        False,
        "service_error",
        12.0,
        2.5,
    )
    assert Task.from_json({"id": "t", "status": "cancelled"}).is_final
    assert not Task.from_json({"id": "t", "status": "processing"}).is_final


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_a_valid_request_has_no_problems():
    assert (
        request_problems(
            {
                "model": "gpt-image-1.5-beta",
                "prompt": "p",
                "size": "2:3",
                "quality": "high",
                "n": 1,
                "image_urls": ["https://e.com/a.png"],
                "callback_url": "https://hooks.example.com/x",
            }
        )
        == []
    )
