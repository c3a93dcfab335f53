"""Downloads: verified whole images, atomic placement, no leftovers."""

from __future__ import annotations

import httpx
import pytest

from runner.download import download_image, remove_partial_files
from runner.errors import DownloadError, LinkExpired
from runner.evolink import EvolinkClient
from runner.fake import render_png


def client_serving(body: bytes, status: int = 200) -> EvolinkClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    return EvolinkClient("https://api.test", "k", transport=transport)


@pytest.mark.anyio
async def test_a_whole_png_is_verified_hashed_and_placed(tmp_path):
    png = render_png("2:3", "x", small=True)
    async with client_serving(png) as client:
        info = await download_image(client, "https://cdn/x", tmp_path, "images/a/b.png", size="2:3")
    assert (tmp_path / "images/a/b.png").read_bytes() == png
    assert (info.width, info.height, info.bytes, info.media_type) == (64, 96, len(png), "image/png")


@pytest.mark.anyio
@pytest.mark.parametrize("body", [b"", b"not an image", render_png("1:1", "x")[:300]])
async def test_a_broken_or_truncated_image_is_refused_and_leaves_nothing(tmp_path, body):
    async with client_serving(body) as client:
        with pytest.raises(DownloadError):
            await download_image(client, "https://cdn/x", tmp_path, "images/x.png")
    assert list(tmp_path.rglob("*.*")) == []


@pytest.mark.anyio
async def test_an_image_of_the_wrong_shape_is_refused(tmp_path):
    async with client_serving(render_png("1:1", "x", small=True)) as client:
        with pytest.raises(DownloadError, match="asked for 2:3"):
            await download_image(client, "https://cdn/x", tmp_path, "images/x.png", size="2:3")
    assert not (tmp_path / "images/x.png").exists()


@pytest.mark.anyio
async def test_a_gone_link_is_link_expired(tmp_path):
    async with client_serving(b"", status=404) as client:
        with pytest.raises(LinkExpired):
            await download_image(client, "https://cdn/x", tmp_path, "images/x.png")


@pytest.mark.anyio
async def test_oversized_downloads_are_cut_off(tmp_path):
    async with client_serving(render_png("1:1", "x")) as client:
        with pytest.raises(DownloadError, match="cap"):
            await download_image(client, "https://cdn/x", tmp_path, "images/x.png", max_bytes=100)


def test_partial_files_of_a_killed_run_are_removed(tmp_path):
    leftover = tmp_path / "a" / ".x.png.1234.runner-part"
    leftover.parent.mkdir()
    leftover.write_bytes(b"x")
    assert remove_partial_files(tmp_path) == 1 and not leftover.exists()
