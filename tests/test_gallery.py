"""gallery.html: every image and prompt shown, untrusted text only ever as text,
checked in a real headless Chromium."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

import runner

from browser import chromium, needs_chromium, page_tags

XSS = ['<script>alert("pwned")</script>', "<img src=x onerror=alert(1)>"]


@pytest.fixture(scope="module")
def gallery_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gallery")
    with (folder / "rows.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "note"])
        for i in range(6):
            writer.writerow([f"item {i}", XSS[i % 2]])
    (folder / "m.yaml").write_text(
        "version: 1\nname: gallery\nrows: rows.csv\nmatrix: {style: [flat, glossy]}\n"
        "prompt: 'A {{ style }} {{ name }} labelled {{ note }}'\n"
        "request: {size: '2:3', quality: low}\n",
        encoding="utf-8",
    )
    frame = runner.run(folder / "m.yaml", out=folder / "out", fake=True)
    assert len(frame) == 12 and (frame["status"] == "completed").all()
    return folder / "out"


def test_gallery_escapes_untrusted_text(gallery_run):
    page = (gallery_run / "gallery.html").read_text(encoding="utf-8")
    assert page.count("<script>") == 1  # the page's own
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert "http" not in page.replace("http-equiv", "")  # no network: nothing fetched


@needs_chromium
def test_gallery_in_chromium_shows_every_image_and_prompt_and_no_injected_markup(
    gallery_run, tmp_path
):
    page = (gallery_run / "gallery.html").resolve().as_uri()
    dom = chromium("--dump-dom", page)
    tags = page_tags(dom)
    images = [attrs for name, attrs in tags if name == "img"]
    assert len(images) == 12
    assert all(a.get("data-loaded") == "1" for a in images), images  # loaded from disk
    assert all(a["src"].startswith("images/") for a in images)
    assert not any(k.startswith("on") for a in images for k in a)
    assert [name for name, _ in tags].count("script") == 1
    assert dom.count('&lt;script&gt;alert("pwned")&lt;/script&gt;') >= 6
    assert dom.count("&lt;img src=x onerror=alert(1)&gt;") >= 6
    for prompt in runner.plan(gallery_run.parent / "m.yaml"):
        assert prompt.prompt.replace("<", "&lt;").replace(">", "&gt;") in dom
    assert "12 of 12 shown" in dom

    # a screenshot for people to look at (kept next to the test's output dir)
    shot = Path(os.environ.get("RUNNER_SCREENSHOTS", tmp_path)) / "gallery.png"
    chromium(f"--screenshot={shot}", page)
    assert shot.stat().st_size > 10_000
