"""Running into an object store: the run works in a local staging dir, as it would in a
local output dir, and a mirror keeps the object store up to date while it goes on.

Every few seconds the mirror uploads the images completed since its last pass (then
drops their local copies, so local disk does not grow with the batch) and a snapshot of
the journal, images first: a journal in the bucket never names an image that is not
there. A machine lost mid-run costs at most the last interval; a rerun anywhere pulls
the journal and resumes. At the end it uploads the tables.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import sys
from pathlib import Path

import anyio
import anyio.to_thread

from .errors import OutputDirError
from .journal import FILENAME as JOURNAL
from .journal import Journal
from .objectstore import ObjectStoreDir

SYNC_INTERVAL_S = 5.0
GENERATION = "mirror_generation"  # journal meta: snapshots uploaded so far


def staging_dir(url: str) -> Path:
    """Where a run into ``url`` works on this machine: ``$RUNNER_STAGING_DIR`` or the
    user's cache dir, one folder per URL (a rerun here continues from it)."""
    parent = os.environ.get("RUNNER_STAGING_DIR")
    if parent:
        base = Path(parent)
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = Path(cache) / "runner" / "staging"
    return base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


class Mirror:
    """Keeps an object-store output dir in step with the local staging dir of a run."""

    def __init__(self, url: str, interval: float = SYNC_INTERVAL_S) -> None:
        self.store = ObjectStoreDir(url)
        self.url = self.store.url
        self.staging = staging_dir(self.url)
        self.interval = interval
        self.stored: dict[str, int] = {}  # images in the store: relative path → size
        self._since = 0.0  # completed_at of the newest image uploaded
        self.finished = False  # everything is uploaded
        self._pushed_changes = -1  # the journal's change count at its last upload
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"Mirror({self.url!r}, staging={str(self.staging)!r})"

    def prepare(self) -> Path:
        """Take the lock, bring the newer journal (the store's or this machine's) into the
        staging dir and list the stored images; returns the staging dir."""
        self.store.acquire_lock()
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            self._pull_journal()
            self.stored = self.store.sizes("images")
        except BaseException:
            self.store.release_lock()
            raise
        return self.staging

    def stored_size(self, relative: str) -> int | None:
        """The size of an image already in the store (or still only in staging)."""
        size = self.stored.get(relative)
        if size is not None:
            return size
        local = self.staging / relative
        return local.stat().st_size if local.is_file() else None

    async def keep_synced(self, journal: Journal) -> None:
        """Sync every interval until cancelled; a failed upload is tried again next time."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.sync(journal)
            except OutputDirError as error:
                if "taken over" in str(error):
                    raise
                self._warn(str(error))  # the next pass tries again

    async def sync(self, journal: Journal) -> None:
        """Upload the images completed since the last pass (all in one call), then the
        journal."""
        pending: list[tuple[Path, str, int]] = []
        newest = self._since
        for file, size, completed_at in journal.completed_files(self._since - 1.0):
            local = self.staging / file
            if self.stored.get(file) != size and local.is_file():
                pending.append((local, file, size))
            newest = max(newest, completed_at or 0.0)
        await anyio.to_thread.run_sync(
            self.store.upload_many, [(local, file) for local, file, _ in pending]
        )
        for local, file, size in pending:
            self.stored[file] = size
            local.unlink()
        self._since = newest
        await self._push_journal(journal)
        await anyio.to_thread.run_sync(self.store.refresh_lock)

    async def finish(self, journal: Journal, outputs: list[str]) -> None:
        """The last sync, then the tables (written by the run into the staging dir)."""
        await self.sync(journal)
        for name in outputs:
            await anyio.to_thread.run_sync(self.store.upload, self.staging / name, name)
        self.finished = True

    def close(self, *, clean: bool) -> None:
        """Release the lock; a clean end also removes the staging dir (all is uploaded)."""
        self.store.release_lock()
        if clean:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _warn(self, problem: str) -> None:
        if problem not in self._warned:
            self._warned.add(problem)
            print(
                f"runner: warning: upload failed ({problem}); trying again every "
                f"{self.interval:g} s",
                file=sys.stderr,
                flush=True,
            )

    async def _push_journal(self, journal: Journal) -> None:
        if journal.changes() == self._pushed_changes:
            return  # nothing new since the last upload
        generation = int(journal.get_meta(GENERATION) or 0) + 1
        journal.set_meta(GENERATION, str(generation))
        snapshot = self.staging / f"{JOURNAL}.upload"
        journal.snapshot(snapshot)
        await anyio.to_thread.run_sync(self.store.upload, snapshot, JOURNAL)
        snapshot.unlink()
        self._pushed_changes = journal.changes()

    def _pull_journal(self) -> None:
        local = self.staging / JOURNAL
        fetched = self.staging / f"{JOURNAL}.store"
        if not self.store.download(JOURNAL, fetched):
            return
        if _generation(fetched) > _generation(local):
            for suffix in ("", "-wal", "-shm"):
                local.with_name(JOURNAL + suffix).unlink(missing_ok=True)
            fetched.replace(local)
        else:
            fetched.unlink()  # this machine's journal is as new or newer (not yet uploaded)


def _generation(path: Path) -> int:
    if not path.is_file():
        return -1
    try:
        with Journal(path, read_only=True) as journal:
            return int(journal.get_meta(GENERATION) or 0)
    except sqlite3.Error:
        return -1
