"""runner compare: two runs side by side, paired by row, matrix values and sample."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

import runner
from runner.cli import app
from runner.compare import compare_runs

from browser import chromium, needs_chromium, page_tags

XSS = '<script>alert("pwned")</script>'


def make_run(folder, name: str, template: str, rows: int = 4):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "rows.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name"])
        writer.writerows([f"item {i} {XSS}"] for i in range(rows))
    manifest = folder / f"{name}.yaml"
    manifest.write_text(
        f"version: 1\nname: {name}\nrows: rows.csv\nmatrix: {{style: [flat, glossy]}}\n"
        f"prompt: '{template}'\nrequest: {{size: '2:3', quality: low}}\n",
        encoding="utf-8",
    )
    runner.run(manifest, out=folder / name, fake=True)
    return folder / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    a = make_run(folder, "v1", "A {{ style }} photo of {{ name }}")
    b = make_run(folder, "v2", "A {{ style }} studio photo of {{ name }}, bright")
    return a, b


def test_compare_pairs_every_job_and_writes_one_page(two_runs, tmp_path):
    a, b = two_runs
    result = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    page = (tmp_path / "compare.html").read_text(encoding="utf-8")
    assert "8 pairs, 0 only in A, 0 only in B" in page
    assert page.count("<script>") == 1 and "&lt;script&gt;" in page
    assert "<mark>studio</mark>" in page and "<mark>photo of item 0" not in page


def test_jobs_present_in_only_one_run_are_listed(tmp_path):
    a = make_run(tmp_path / "a", "v1", "A {{ style }} photo of {{ name }}", rows=3)
    b = make_run(tmp_path / "b", "v2", "A {{ style }} photo of {{ name }}!", rows=2)
    page = compare_runs(a, b, tmp_path / "cmp").read_text(encoding="utf-8")
    assert "4 pairs, 2 only in A, 0 only in B" in page


def test_missing_run_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "x"), str(tmp_path / "y")])
    assert result.exit_code == 2 and "holds no run" in result.stderr


@needs_chromium
def test_compare_in_chromium_shows_both_images_of_every_pair(two_runs, tmp_path):
    page = compare_runs(*two_runs, tmp_path / "cmp")
    dom = chromium("--dump-dom", page.resolve().as_uri())
    images = [attrs for name, attrs in page_tags(dom) if name == "img"]
    assert len(images) == 16
    assert all(a.get("data-loaded") == "1" for a in images)
    assert not any(k.startswith("on") for a in images for k in a)
    assert [name for name, _ in page_tags(dom)].count("script") == 1
    assert dom.count('&lt;script&gt;alert("pwned")&lt;/script&gt;') >= 16
    chromium(f"--screenshot={tmp_path / 'compare.png'}", page.resolve().as_uri())
