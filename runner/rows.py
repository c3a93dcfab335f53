"""Input rows: a CSV file read as text, or the manifest's inline list.

The csv module, not pandas, reads the file: pandas pads a short row with NaN
without a word, and a short row is a mistake the user must hear about, with its line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .manifest import RESERVED_NAMES, LoadedManifest

csv.field_size_limit(10 * 1024 * 1024)


@dataclass(frozen=True)
class Row:
    """One input row: its 0-based index, its values, and where it came from."""

    index: int
    values: dict[str, Any]
    source: str  # "file:line", for error messages


@dataclass(frozen=True)
class RowSource:
    """Where the rows come from; iterate ``rows()`` as often as needed (it streams)."""

    loaded: LoadedManifest
    columns: tuple[str, ...]
    csv_path: Path | None

    def rows(self) -> Iterator[Row]:
        if self.csv_path is not None:
            yield from _read_csv(self.csv_path, self.loaded)[1]
            return
        inline = self.loaded.manifest.rows
        if not isinstance(inline, list):
            yield Row(0, {}, str(self.loaded.path))
            return
        for index, values in enumerate(inline):
            line = self.loaded.line_of("rows", index)
            yield Row(index, dict(values), f"{self.loaded.path}:{line}")


def open_rows(loaded: LoadedManifest) -> RowSource:
    """Check the rows' source and its header; the rows themselves stream later."""
    spec = loaded.manifest.rows
    if isinstance(spec, str):
        path = resolve_input(loaded, spec, "rows")
        header, rows = _read_csv(path, loaded)
        next(rows, None)  # reads the first data row: an empty CSV fails here
        rows.close()
        return RowSource(loaded, header, path)
    columns: list[str] = []
    for row in spec or []:
        columns.extend(key for key in row if key not in columns)
    return RowSource(loaded, tuple(columns), None)


def resolve_input(loaded: LoadedManifest, relative: str, key: str) -> Path:
    """Resolve an input path against the manifest's folder; it must be a readable file."""
    path = (loaded.base_dir / relative) if not Path(relative).is_absolute() else Path(relative)
    if not path.exists():
        raise loaded.error(f"file not found: {path}", key)
    if not path.is_file():
        raise loaded.error(f"not a file: {path}", key)
    return path


def _read_csv(path: Path, loaded: LoadedManifest) -> tuple[tuple[str, ...], Generator[Row]]:
    shown = str(path)
    handle = _open_text(path)
    try:
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as error:
            raise _csv_error(error, shown, 1) from None
        if not header or all(not name.strip() for name in header):
            raise ManifestError("the CSV is empty (no header line)", file=shown, line=1)
        columns = tuple(name.strip() for name in header)
        _check_header(columns, shown, loaded)
    except BaseException:
        handle.close()
        raise
    return columns, _data_rows(reader, handle, columns, shown)


def _open_text(path: Path) -> io.TextIOWrapper:
    with path.open("rb") as probe:
        head = probe.read(8192)
    if b"\x00" in head:
        raise ManifestError("not a CSV text file (binary content)", file=str(path), line=1)
    return path.open("r", encoding="utf-8-sig", newline="")


def _check_header(columns: tuple[str, ...], shown: str, loaded: LoadedManifest) -> None:
    seen: set[str] = set()
    for position, name in enumerate(columns, start=1):
        if not name:
            raise ManifestError(f"column {position} has an empty name", file=shown, line=1)
        if name in seen:
            raise ManifestError(f"duplicate column name {name!r}", file=shown, line=1)
        if name in RESERVED_NAMES:
            raise ManifestError(
                f"column name {name!r} is reserved ({', '.join(RESERVED_NAMES)})",
                file=shown,
                line=1,
            )
        if name in loaded.manifest.matrix:
            raise ManifestError(
                f"column {name!r} is also a matrix key", file=shown, line=1, field=name
            )
        seen.add(name)


def _data_rows(
    reader: Any, handle: io.TextIOWrapper, columns: tuple[str, ...], shown: str
) -> Generator[Row]:
    index = 0
    with handle:
        while True:
            start_line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as error:
                raise _csv_error(error, shown, start_line) from None
            if not fields or fields == [""]:
                continue  # a blank line
            if len(fields) != len(columns):
                many = "many" if len(fields) > len(columns) else "few"
                raise ManifestError(
                    f"too {many} fields: {len(fields)} where the header has {len(columns)}",
                    file=shown,
                    line=start_line,
                )
            yield Row(index, dict(zip(columns, fields)), f"{shown}:{start_line}")
            index += 1
    if index == 0:
        raise ManifestError("the CSV has a header but no data rows", file=shown, line=2)


def _csv_error(error: Exception, shown: str, line: int) -> ManifestError:
    if isinstance(error, UnicodeDecodeError):
        return ManifestError("not UTF-8 text", file=shown, line=line)
    return ManifestError(f"malformed CSV: {error}", file=shown, line=line)
