"""gallery.html: one self-contained page to look through a run's results.

Every card is rendered here with ``html.escape`` (CSV cells and prompts are untrusted
text); the page's small script only shows and hides cards, it never writes HTML.
Images are linked relatively, so the page works from the output dir with no server.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f5;color:#18181b}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:10px 16px;
 display:flex;flex-wrap:wrap;gap:12px;align-items:center;z-index:1}
header h1{font-size:16px;margin:0 12px 0 0}
label{font-size:12px;color:#52525b}
select,input{font:inherit;padding:2px 4px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px;
 padding:16px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;overflow:hidden;
 display:flex;flex-direction:column}
.card img{width:100%;aspect-ratio:1/1;object-fit:contain;background:#e4e4e7}
.card .missing{aspect-ratio:1/1;display:flex;align-items:center;justify-content:center;
 background:#fee2e2;color:#991b1b;padding:8px;text-align:center}
.card .body{padding:8px 10px}
.prompt{white-space:pre-wrap;margin:4px 0}
.meta{font-size:12px;color:#52525b;margin:0;overflow-wrap:anywhere}
.meta dt{display:inline;font-weight:600}.meta dd{display:inline;margin:0 8px 0 2px}
.status-completed .badge{background:#dcfce7;color:#166534}
.status-failed .badge{background:#fee2e2;color:#991b1b}
.status-pending .badge{background:#fef9c3;color:#854d0e}
.badge{font-size:11px;border-radius:3px;padding:1px 5px}
.error{color:#991b1b;font-size:12px}
[hidden]{display:none!important}
"""

_SCRIPT = """
(function(){
  var filters = Array.prototype.slice.call(document.querySelectorAll('[data-filter]'));
  var search = document.getElementById('search');
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var count = document.getElementById('count');
  function apply(){
    var shown = 0, needle = search.value.toLowerCase();
    cards.forEach(function(card){
      var ok = filters.every(function(f){
        return !f.value || card.getAttribute('data-' + f.getAttribute('data-filter')) === f.value;
      });
      if (ok && needle) { ok = card.textContent.toLowerCase().indexOf(needle) >= 0; }
      card.hidden = !ok; if (ok) { shown++; }
    });
    count.textContent = shown + ' of ' + cards.length + ' shown';
  }
  filters.forEach(function(f){ f.addEventListener('change', apply); });
  search.addEventListener('input', apply);
  apply();
})();
"""

# Marks each image data-loaded="1" once it has loaded (what the browser tests look for).
MARK_LOADED_SCRIPT = """
Array.prototype.forEach.call(document.querySelectorAll('img'), function(img){
  function mark(){ img.setAttribute('data-loaded', img.naturalWidth > 0 ? '1' : '0'); }
  if (img.complete) { mark(); } else { img.addEventListener('load', mark);
    img.addEventListener('error', mark); }
});
"""


def gallery_html(
    title: str,
    frame: pd.DataFrame,
    columns: Sequence[str],
    matrix: Sequence[str],
    total: int | None = None,
) -> str:
    """The page for a results table; ``columns``/``matrix`` name its input columns. When
    ``frame`` holds only the first rows of a larger table, ``total`` says how many."""
    esc = html.escape
    filters = [_select("status", "status", ["completed", "failed", "pending"])]
    for key in matrix:
        values = sorted({cell_text(v) for v in frame[key]}) if key in frame else []
        filters.append(_select(f"m-{_slug(key)}", key, values))
    cards = [_card(record, columns, matrix) for record in frame.to_dict("records")]
    note = ""
    if total is not None and total > len(frame):
        note = f"<span>the first {len(frame)} of {total} jobs; results.csv has them all</span>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · runner gallery</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{esc(title)}</h1>{''.join(filters)}"
        '<label>search <input id="search" type="search" placeholder="prompt, column…">'
        f'</label><span id="count"></span>{note}</header>'
        f"<main>{''.join(cards)}</main><script>{_SCRIPT}{MARK_LOADED_SCRIPT}</script>"
        "</body></html>\n"
    )


def _card(record: Mapping[Any, Any], columns: Sequence[str], matrix: Sequence[str]) -> str:
    esc = html.escape
    status = cell_text(record.get("status"))
    attrs = [f'data-status="{esc(status)}"']
    attrs += [f'data-m-{_slug(k)}="{esc(cell_text(record.get(k)))}"' for k in matrix]
    file = cell_text(record.get("file"))
    if status == "completed" and file:
        picture = (
            f'<img src="{esc(_url_path(file))}" loading="lazy" '
            f'alt="{esc(cell_text(record.get("prompt")))}">'
        )
    else:
        picture = f'<div class="missing">{esc(status)}</div>'
    meta = [
        ("job", record.get("job_id")),
        ("row", record.get("row")),
        ("sample", record.get("sample")),
        ("size", record.get("size")),
        ("quality", record.get("quality")),
    ]
    meta += [(k, record.get(k)) for k in (*matrix, *columns)]
    items = " ".join(f"<dt>{esc(str(k))}</dt><dd>{esc(cell_text(v))}</dd>" for k, v in meta)
    error = cell_text(record.get("error"))
    return (
        f'<article class="card status-{esc(status)}" {" ".join(attrs)}>{picture}'
        f'<div class="body"><span class="badge">{esc(status)}</span>'
        f'<p class="prompt">{esc(cell_text(record.get("prompt")))}</p>'
        f'<dl class="meta">{items}</dl>'
        + (f'<p class="error">{esc(error)}</p>' if error else "")
        + "</div></article>"
    )


def _select(name: str, label: str, values: Sequence[str]) -> str:
    esc = html.escape
    options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return (
        f'<label>{esc(label)} <select data-filter="{esc(name)}">'
        f'<option value="">all</option>{options}</select></label>'
    )


def cell_text(value: Any) -> str:
    """A table cell as text: missing values (None, NaN, NA) are empty."""
    if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value)


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in key.lower())


def _url_path(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
