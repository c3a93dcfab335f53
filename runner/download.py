"""Downloads: streamed into a temp file, size-capped, verified as a whole image of the
requested shape, hashed, then renamed into place. A file in ``images/`` is always whole."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

import anyio

from .errors import DownloadError, LinkExpired
from .evolink import SIZE_PIXELS, EvolinkClient
from .journal import FileInfo

MAX_BYTES = 64 * 1024 * 1024
TEMP_SUFFIX = ".runner-part"
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
ASPECT_TOLERANCE = 0.02


class ImageMismatch(DownloadError):
    """Raised when a whole image came back in another shape than the one requested."""

    retryable = False


async def download_image(
    client: EvolinkClient,
    url: str,
    out_dir: Path,
    relative: str,
    *,
    size: str | None = None,
    max_bytes: int = MAX_BYTES,
) -> FileInfo:
    """Fetch ``url`` into ``out_dir/relative``; raises DownloadError (LinkExpired on 404/410)."""
    target = out_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    digest = hashlib.sha256()
    written = 0
    try:
        async with client.stream(url) as response:
            if response.status_code in (404, 410):
                raise LinkExpired(f"result link gone (HTTP {response.status_code})")
            if response.status_code >= 400:
                raise DownloadError(f"download answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadError(f"result is {declared} bytes, over the {max_bytes} cap")
            with temp.open("wb") as handle:
                async for chunk in response.aiter_bytes(1 << 16):
                    written += len(chunk)
                    if written > max_bytes:
                        raise DownloadError(f"result is over the {max_bytes}-byte cap")
                    digest.update(chunk)
                    handle.write(chunk)
            if declared and declared.isdigit() and int(declared) != written:
                raise DownloadError(f"download cut short: {written} of {declared} bytes")
        width, height, kind = await anyio.to_thread.run_sync(_verify_and_place, temp, target, size)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return FileInfo(relative, digest.hexdigest(), written, width, height, MEDIA_TYPES[kind])


def _verify_and_place(temp: Path, target: Path, size: str | None) -> tuple[int, int, str]:
    """Decode the whole image (a truncated file fails here), then fsync and rename."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(temp) as image:
            kind = image.format or ""
            image.load()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DownloadError(f"not a whole image: {error}") from None
    if kind not in MEDIA_TYPES:
        raise DownloadError(f"unexpected image format {kind or 'unknown'}")
    _check_shape(width, height, size, target.name)
    with temp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, target)
    return width, height, kind


def _check_shape(width: int, height: int, size: str | None, relative: str) -> None:
    if size is None or size not in SIZE_PIXELS:
        return
    want_w, want_h = SIZE_PIXELS[size]
    if abs(width / height - want_w / want_h) > ASPECT_TOLERANCE * (want_w / want_h):
        raise ImageMismatch(f"{relative} is {width}x{height}, the request asked for {size}")


def remove_partial_files(images_dir: Path) -> int:
    """Delete temp files a killed run left behind; returns how many."""
    removed = 0
    if images_dir.is_dir():
        for leftover in images_dir.rglob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
    return removed
