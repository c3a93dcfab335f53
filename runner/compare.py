"""``runner compare A B``: a static side-by-side page of two runs of a batch.

Jobs are paired by row index, matrix values and sample, not by job id (which changes
with the prompt). Like gallery.html, every text is escaped here and the page's script
never writes HTML; images are linked relatively.
"""

from __future__ import annotations

import difflib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import OutputDirError
from .gallery import MARK_LOADED_SCRIPT, cell_text
from .outputs import result_column_name, write_if_changed

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}
header{background:#fff;border-bottom:1px solid #ddd;padding:10px 16px}
h1{font-size:16px;margin:0}h2{font-size:15px;margin:20px 16px 8px}
.pair{background:#fff;border:1px solid #ddd;border-radius:6px;margin:12px 16px;padding:8px}
.pair h3{font-size:13px;margin:0 0 6px;color:#52525b}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.side img{width:100%;max-height:420px;object-fit:contain;background:#e4e4e7}
.missing{padding:40px;text-align:center;background:#fee2e2;color:#991b1b}
.prompt{white-space:pre-wrap;margin:4px 0}
mark{background:#fde68a}
table{margin:0 16px;border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px}
"""


@dataclass
class _Run:
    path: Path
    name: str
    frame: pd.DataFrame
    matrix: list[str]  # result-table column names of the matrix keys


def compare_runs(a: Path, b: Path, out: Path | None = None) -> Path:
    """Write the comparison page; returns its path."""
    left, right = _load(a), _load(b)
    out = out or a.parent / f"compare-{left.name}-vs-{right.name}"
    out.mkdir(parents=True, exist_ok=True)
    keys = sorted(set(left.matrix) | set(right.matrix))
    index_a = _index(left, keys)
    index_b = _index(right, keys)
    paired = [k for k in index_a if k in index_b]
    only_a = [k for k in index_a if k not in index_b]
    only_b = [k for k in index_b if k not in index_a]
    page = _page(left, right, keys, paired, only_a, only_b, index_a, index_b, out)
    target = out / "compare.html"
    write_if_changed(target, page.encode("utf-8"))
    return target


def _load(folder: Path) -> _Run:
    table = folder / "results.parquet"
    info_path = folder / "run.json"
    if not table.is_file() or not info_path.is_file():
        raise OutputDirError(f"{folder} holds no run (no results.parquet / run.json)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    matrix_keys = list((info.get("resolved_manifest") or {}).get("matrix") or {})
    matrix = [result_column_name(k) for k in matrix_keys]
    return _Run(folder, str(info.get("name") or folder.name), pd.read_parquet(table), matrix)


def _index(run: _Run, keys: list[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    index: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in run.frame.to_dict("records"):
        fields = {str(k): v for k, v in record.items()}
        key = (int(fields["row"]), int(fields["sample"]), *(cell_text(fields.get(k)) for k in keys))
        index[key] = fields
    return dict(sorted(index.items()))


def _page(
    left: _Run,
    right: _Run,
    keys: list[str],
    paired: list[tuple[Any, ...]],
    only_a: list[tuple[Any, ...]],
    only_b: list[tuple[Any, ...]],
    index_a: dict[tuple[Any, ...], dict[str, Any]],
    index_b: dict[tuple[Any, ...], dict[str, Any]],
    out: Path,
) -> str:
    esc = html.escape
    pairs = "".join(
        _pair(key, keys, index_a[key], index_b[key], left, right, out) for key in paired
    )
    title = f"{left.name} ({left.path}) vs {right.name} ({right.path})"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>compare · {esc(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><p id="count">{len(paired)} pairs, '
        f"{len(only_a)} only in A, {len(only_b)} only in B</p></header>"
        f"<h2>Pairs</h2>{pairs}"
        f"<h2>Only in A: {esc(left.name)}</h2>{_listing(only_a, keys, index_a)}"
        f"<h2>Only in B: {esc(right.name)}</h2>{_listing(only_b, keys, index_b)}"
        f"<script>{MARK_LOADED_SCRIPT}</script></body></html>\n"
    )


def _pair(
    key: tuple[Any, ...],
    keys: list[str],
    a: dict[str, Any],
    b: dict[str, Any],
    left: _Run,
    right: _Run,
    out: Path,
) -> str:
    marked_a, marked_b = _diff(cell_text(a.get("prompt")), cell_text(b.get("prompt")))
    return (
        f'<section class="pair"><h3>{html.escape(_describe(key, keys))}</h3>'
        f'<div class="sides">{_side(a, left, out, marked_a)}{_side(b, right, out, marked_b)}'
        "</div></section>"
    )


def _side(record: dict[str, Any], run: _Run, out: Path, prompt_html: str) -> str:
    esc = html.escape
    file = cell_text(record.get("file"))
    status = cell_text(record.get("status"))
    if status == "completed" and file:
        link = os.path.relpath(run.path / file, out).replace(os.sep, "/")
        picture = f'<img src="{esc(link)}" alt="">'
    else:
        picture = f'<div class="missing">{esc(status)}</div>'
    return (
        f'<div class="side">{picture}<p class="prompt">{prompt_html}</p>'
        f'<p class="meta">{esc(cell_text(record.get("size")))} '
        f"{esc(cell_text(record.get('quality')))} · {esc(status)}</p></div>"
    )


def _diff(a: str, b: str) -> tuple[str, str]:
    """Both prompts as escaped HTML, the words that differ in <mark>."""
    words_a, words_b = a.split(" "), b.split(" ")
    out_a: list[str] = []
    out_b: list[str] = []
    matcher = difflib.SequenceMatcher(a=words_a, b=words_b, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        part_a = html.escape(" ".join(words_a[i1:i2]))
        part_b = html.escape(" ".join(words_b[j1:j2]))
        if op == "equal":
            out_a.append(part_a)
            out_b.append(part_b)
        else:
            if part_a:
                out_a.append(f"<mark>{part_a}</mark>")
            if part_b:
                out_b.append(f"<mark>{part_b}</mark>")
    return " ".join(out_a), " ".join(out_b)


def _listing(
    keys_list: list[tuple[Any, ...]], keys: list[str], index: dict[tuple[Any, ...], dict[str, Any]]
) -> str:
    if not keys_list:
        return '<p style="margin:0 16px">none</p>'
    rows = "".join(
        f"<tr><td>{html.escape(_describe(k, keys))}</td>"
        f"<td>{html.escape(cell_text(index[k].get('prompt')))}</td></tr>"
        for k in keys_list
    )
    return f"<table><tr><th>job</th><th>prompt</th></tr>{rows}</table>"


def _describe(key: tuple[Any, ...], keys: list[str]) -> str:
    parts = [
        f"row {key[0]}",
        *(f"{k}={v}" for k, v in zip(keys, key[2:]) if v != ""),
        f"sample {key[1]}",
    ]
    return " · ".join(parts)
