"""Output dirs in object storage: ``--out s3://bucket/prefix`` or any fsspec URL.

Only this module talks to fsspec. A lock object at the prefix keeps two writers apart:
it is created exclusively (S3's If-None-Match), refreshed by its owner while the run
goes on, and taken over when it is stale (its owner stopped refreshing it, or was a
process on this machine that is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import OutputDirError

LOCK_NAME = ".runner.lock"
LOCK_STALE_S = 60.0  # a lock not refreshed for this long belongs to a lost machine
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str | Path | None) -> bool:
    """An object-store URL (``s3://``, ``gs://``, ``memory://`` ...); ``file://`` and
    plain paths are local dirs."""
    return (
        isinstance(location, str)
        and bool(_URL.match(location))
        and not location.startswith("file://")
    )


def local_path(location: str | Path) -> Path:
    """A local dir given as a path or a ``file://`` URL."""
    text = str(location)
    return Path(text[len("file://") :]) if text.startswith("file://") else Path(text)


def read_output(location: str | Path, relative: str) -> bytes | None:
    """One file of an output dir, local or in an object store; None if it is not there."""
    if is_url(location):
        return ObjectStoreDir(str(location)).read_bytes(relative)
    path = local_path(location) / relative
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise OutputDirError(f"{path}: {_short(error)}") from None


class ObjectStoreDir:
    """An output dir at an fsspec URL: read, write and list files by relative path."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with the default install
            raise OutputDirError("object-store outputs need fsspec: pip install fsspec") from None
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as error:
            raise OutputDirError(f"{self.url}: {_short(error)}") from None
        self.root = self.root.rstrip("/")
        self.owner = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"ObjectStoreDir({self.url!r})"

    def key(self, relative: str) -> str:
        return f"{self.root}/{relative}" if relative else self.root

    def read_bytes(self, relative: str) -> bytes | None:
        """A file's bytes, or None if it is not there."""
        self.fs.invalidate_cache(self.key(relative))
        try:
            with _reported(f"{self.url}/{relative}"):
                return bytes(self.fs.cat_file(self.key(relative)))
        except FileNotFoundError:
            return None

    def write_bytes(self, relative: str, data: bytes) -> None:
        with _reported(f"{self.url}/{relative}"):
            self.fs.pipe_file(self.key(relative), data)

    def upload(self, local: Path, relative: str) -> None:
        """Copy a local file up; checks the stored size (an upload cut short is an error)."""
        target = self.key(relative)
        with _reported(f"{self.url}/{relative}"):
            self.fs.put_file(str(local), target)
            stored = self.fs.size(target)
        if stored != local.stat().st_size:
            raise OutputDirError(f"{self.url}/{relative}: stored {stored} bytes, not all of it")

    def upload_many(self, files: list[tuple[Path, str]]) -> None:
        """Copy local files up in one call (concurrent on S3); an object store writes an
        object whole or not at all, so only a failed call needs a retry."""
        if not files:
            return
        with _reported(f"{self.url}: uploading images"):
            self.fs.put([str(local) for local, _ in files], [self.key(r) for _, r in files])

    def download(self, relative: str, local: Path) -> bool:
        """Copy a file down (to a temp name, then renamed); False if it is not there."""
        partial = local.with_name(local.name + ".download")
        try:
            with _reported(f"{self.url}/{relative}"):
                self.fs.get_file(self.key(relative), str(partial))
        except FileNotFoundError:
            return False
        partial.replace(local)
        return True

    def copy_from(self, other: ObjectStoreDir, relative: str) -> None:
        """Copy a file from another dir: inside the store when both share it, else
        through this machine."""
        with _reported(f"{other.url}/{relative}"):
            if type(other.fs) is type(self.fs):
                self.fs.copy(other.key(relative), self.key(relative))
            else:
                self.fs.pipe_file(self.key(relative), other.fs.cat_file(other.key(relative)))

    def size_of(self, relative: str) -> int | None:
        self.fs.invalidate_cache(self.key(relative))
        try:
            with _reported(f"{self.url}/{relative}"):
                return int(self.fs.size(self.key(relative)))
        except FileNotFoundError:
            return None

    def sizes(self, folder: str) -> dict[str, int]:
        """Every file below ``folder``: its path relative to the dir → its size."""
        self.fs.invalidate_cache()  # another machine may have written since
        try:
            with _reported(f"{self.url}/{folder}"):
                found = self.fs.find(self.key(folder), detail=True)
        except FileNotFoundError:
            return {}
        start = len(self.root) + 1
        return {
            name[start:]: int(info.get("size") or 0)
            for name, info in found.items()
            if info.get("type") != "directory"
        }

    def remove(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key(relative))

    # -- the lock ----------------------------------------------------------------------

    def acquire_lock(self) -> None:
        """Take the prefix for this process or raise OutputDirError naming its holder."""
        for _ in range(3):
            try:
                with _reported(f"{self.url}: cannot take the lock"):
                    self.fs.pipe_file(self.key(LOCK_NAME), self._lock_body(), mode="create")
                return
            except FileExistsError:
                holder = self._read_lock()
                if holder is not None and not _stale(holder):
                    raise OutputDirError(
                        f"{self.url} is in use by runner process {holder.get('pid')} on "
                        f"{holder.get('host')} (its lock was refreshed "
                        f"{time.time() - float(holder.get('refreshed', 0)):.0f} s ago; a lock "
                        f"not refreshed for {LOCK_STALE_S:.0f} s is taken over)"
                    ) from None
                self.remove(LOCK_NAME)  # stale: its owner is gone
        raise OutputDirError(f"{self.url}: another process keeps taking the lock")

    def refresh_lock(self) -> None:
        """Called every sync; refuses to go on if another process took the lock over."""
        holder = self._read_lock()
        if holder is not None and holder.get("owner") != self.owner:
            raise OutputDirError(
                f"{self.url}: the lock was taken over by {holder.get('host')} "
                f"(process {holder.get('pid')}); this run stops writing there"
            )
        self.write_bytes(LOCK_NAME, self._lock_body())

    def release_lock(self) -> None:
        holder = self._read_lock()
        if holder is not None and holder.get("owner") == self.owner:
            self.remove(LOCK_NAME)

    def _lock_body(self) -> bytes:
        body = {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "refreshed": time.time(),
        }
        return json.dumps(body).encode()

    def _read_lock(self) -> dict[str, Any] | None:
        data = self.read_bytes(LOCK_NAME)
        if data is None:
            return None
        try:
            holder = json.loads(data)
        except ValueError:
            return {}  # unreadable: treated as stale
        return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def _reported(where: str) -> Iterator[None]:
    """fsspec's back ends raise their own kinds of error (botocore's, gcsfs's ...): each
    becomes one OutputDirError naming the place, except the two callers handle (not
    there, already there)."""
    try:
        yield
    except (FileNotFoundError, FileExistsError, OutputDirError):
        raise
    except Exception as error:
        raise OutputDirError(f"{where}: {_short(error)}") from None


def _stale(holder: dict[str, Any]) -> bool:
    refreshed = holder.get("refreshed")
    if not isinstance(refreshed, (int, float)) or time.time() - refreshed > LOCK_STALE_S:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _alive(holder["pid"])  # a process of this machine that is gone
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if not isinstance(error, OSError) and type(error).__name__ not in text:
        text = f"{type(error).__name__}: {text}"
    return text.splitlines()[0][:300]
