"""Selecting jobs, previewing a few, editing and rerunning."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from runner import ManifestError
from runner.cli import app
from runner.expand import plan_file
from runner.select import parse_rows, selection_from_options

MANIFEST = """\
version: 1
name: iterate
rows: rows.csv
matrix: {style: [studio, outdoor], aspect: ["1:1", "2:3"]}
template: t.j2
request: {size: "{{ aspect }}", quality: low}
filename: "{{ name }}/{{ style }}-{{ aspect | replace(':', 'x') }}.png"
"""


@pytest.fixture
def batch(tmp_path, monkeypatch):
    (tmp_path / "rows.csv").write_text("name\n" + "".join(f"item{i}\n" for i in range(5)))
    (tmp_path / "t.j2").write_text("A {{ style }} photo of {{ name }}, crisp.\n")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def plan_json(*args: str) -> dict:
    result = cli("plan", "m.yaml", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_rows_accept_indexes_and_ranges():
    assert parse_rows("3, 7-9") == {3, 7, 8, 9}
    for bad in ("x", "3-1", "1,,2"):
        with pytest.raises(ManifestError):
            parse_rows(bad)


def test_selectors_intersect_then_sample_then_limit(batch):
    plan = plan_file("m.yaml")
    pick = selection_from_options(rows="1-3", where='style == "studio"').apply(plan)
    assert {(j.row, j.matrix["style"]) for j in pick} == {(r, "studio") for r in (1, 2, 3)}
    assert len(selection_from_options(rows="1-3", limit=2).apply(plan)) == 2
    sampled = selection_from_options(sample=5, seed=1).apply(plan)
    assert sampled == selection_from_options(sample=5, seed=1).apply(plan)
    assert sampled != selection_from_options(sample=5, seed=2).apply(plan)
    assert [j.job_id for j in sampled] == [j.job_id for j in plan.jobs if j in sampled]


def test_plan_where_reports_exactly_the_matching_jobs(batch):
    plan = plan_json("--where", 'aspect == "2:3"')
    assert plan["jobs"] == 10 and plan["manifest_jobs"] == 20
    matching = [j.job_id for j in plan_file("m.yaml").jobs if j.matrix["aspect"] == "2:3"]
    assert plan["job_ids"] == matching


@pytest.mark.parametrize(
    "expression",
    [
        "style ==",
        "().__class__.__mro__",
        "cycler.__init__.__globals__",
        "'x' * 10**9",
        "nosuchcolumn == 1",
        "x" * 501,
    ],
)
def test_bad_where_is_one_line_exit_2(batch, expression):
    result = cli("plan", "m.yaml", "--json", "--where", expression)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--where" in result.stderr
    assert result.stdout == ""


def test_a_sampled_preview_is_never_paid_for_again(batch, loopback, monkeypatch):
    server = loopback(task_seconds=(0.05, 0.1), small_images=True)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-x")
    url = ("--base-url", server.url)
    assert cli("run", "m.yaml", "--sample", "5", "--seed", "1", *url).exit_code == 0
    first = {(b["prompt"], b["size"]) for b in server.fake.submitted}
    assert cli("run", "m.yaml", "--sample", "5", "--seed", "1", *url).exit_code == 0
    assert len(server.fake.submitted) == 5  # the same 5: nothing new

    results = pd.read_csv(batch / "outputs" / "iterate" / "results.csv")
    assert len(results) == 5 and (results["status"] == "completed").all()  # not the others
    plan = plan_json("--out", "outputs/iterate")
    assert plan["existing"] == {"to_run": 15, "done": 5, "failed": 0, "dropped": 0}

    assert cli("run", "m.yaml", *url).exit_code == 0
    assert len(server.fake.submitted) == 20
    assert not first & {(b["prompt"], b["size"]) for b in server.fake.submitted[5:]}


def test_after_a_one_word_edit_only_changed_prompts_are_submitted(batch, loopback, monkeypatch):
    server = loopback(task_seconds=(0.05, 0.1), small_images=True)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-x")
    assert cli("run", "m.yaml", "--base-url", server.url).exit_code == 0
    (batch / "t.j2").write_text(
        "A {{ style }} photo of {{ name }}, {{ 'sharp' if style == 'studio' else 'crisp' }}.\n"
    )
    plan = plan_json("--out", "outputs/iterate")
    assert plan["existing"] == {"to_run": 10, "done": 10, "failed": 0, "dropped": 10}
    assert cli("run", "m.yaml", "--base-url", server.url).exit_code == 0
    resent = server.fake.submitted[20:]
    assert len(resent) == 10 and all("sharp" in body["prompt"] for body in resent)
    results = pd.read_csv(batch / "outputs" / "iterate" / "results.csv")
    assert len(results) == 20  # the old studio jobs left the table


def test_exit_code_speaks_of_the_selected_jobs(batch, loopback, monkeypatch):
    server = loopback(task_seconds=(0.05, 0.1), small_images=True)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-x")
    assert cli("run", "m.yaml", "--limit", "2", "--base-url", server.url).exit_code == 0


def test_a_selection_of_no_jobs_runs_nothing_and_lists_nothing(batch, loopback, monkeypatch):
    server = loopback(task_seconds=(0.05, 0.1), small_images=True)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-x")
    result = cli("run", "m.yaml", "--where", 'style == "none"', "--base-url", server.url)
    assert result.exit_code == 0, result.stderr
    assert server.fake.counts["submissions"] == 0
    assert len(pd.read_csv(batch / "outputs" / "iterate" / "results.csv")) == 0
