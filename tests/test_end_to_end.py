"""The whole path through the CLI against the fake server on loopback."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from jinja2.sandbox import SandboxedEnvironment
from PIL import Image
from typer.testing import CliRunner

from runner.cli import app
from runner.evolink import SIZE_PIXELS

STYLES = ["studio", "outdoor", "neon"]


def tricky_rows(count: int = 25) -> list[dict[str, str]]:
    rows = []
    for i in range(count):
        rows.append(
            {
                "sku": f"{i:03d}",
                "name": [
                    "Café «Ωmega», 500 ml",
                    'The "Big" one',
                    "Multi\nline name",
                    "NA",
                    "コーヒー",
                ][i % 5]
                + f" #{i}",
                "aspect": ["1:1", "2:3", "3:2"][i % 3],
            }
        )
    return rows


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    with (tmp_path / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sku", "name", "aspect"])
        writer.writeheader()
        writer.writerows(tricky_rows())
    (tmp_path / "m.yaml").write_text(
        "version: 1\nname: tricky\nrows: products.csv\n"
        f"matrix: {{style: {json.dumps(STYLES)}}}\nrepeat: 2\n"
        "prompt: |\n  A {{ style }} photo of {{ name }} (sku {{ sku }}), take {{ sample }}.\n"
        "request: {size: '{{ aspect }}', quality: low}\n"
        "filename: '{{ sku }}/{{ style }}-{{ sample }}.png'\n"
        "limits: {concurrency: 50}\n",
        encoding="utf-8",
    )
    return tmp_path / "m.yaml"


def expected_prompts() -> dict[tuple[str, str], str]:
    env = SandboxedEnvironment()
    template = env.from_string(
        "A {{ style }} photo of {{ name }} (sku {{ sku }}), take {{ sample }}.\n"
    )
    return {
        (row["sku"], f"{style}-{sample}"): template.render(
            **row, style=style, sample=sample
        ).strip()
        for row in tricky_rows()
        for style in STYLES
        for sample in range(2)
    }


def test_validate_and_plan_count_150_jobs_with_stable_ids(batch, monkeypatch):
    monkeypatch.chdir(batch.parent)
    runner = CliRunner()
    assert runner.invoke(app, ["validate", "m.yaml"]).exit_code == 0
    first = runner.invoke(app, ["plan", "m.yaml", "--json"])
    second = runner.invoke(app, ["plan", "m.yaml", "--json"])
    assert first.exit_code == 0, first.stderr
    plan = json.loads(first.stdout)
    assert plan["jobs"] == 150
    assert len(set(plan["job_ids"])) == 150
    assert json.loads(second.stdout)["job_ids"] == plan["job_ids"]
    assert not (batch.parent / "outputs").exists()


def test_run_completes_every_job_with_verified_files_and_rerun_sends_nothing(
    batch, monkeypatch, loopback
):
    server = loopback(task_seconds=(0.05, 0.3), small_images=True)
    monkeypatch.chdir(batch.parent)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-e2e")
    result = CliRunner().invoke(app, ["run", "m.yaml", "--base-url", server.url])
    assert result.exit_code == 0, result.stderr
    out = batch.parent / "outputs" / "tricky"

    results = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False)
    files = {entry["job_id"]: entry for entry in json.loads((out / "files.json").read_text())}
    assert len(results) == 150 and set(results["status"]) == {"completed"}
    assert set(files) == set(results["job_id"])
    for row in results.itertuples():
        path = out / row.file
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256 == files[row.job_id]["sha256"]
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG"
            assert image.size == (int(row.width), int(row.height))
        want_w, want_h = SIZE_PIXELS[row.size]
        assert int(row.width) * want_h == int(row.height) * want_w

    # what was sent is exactly what Jinja renders from the manifest
    sent = {(body["prompt"], body["size"]) for body in server.fake.submitted}
    rows = {r["sku"]: r for r in tricky_rows()}
    wanted = {(prompt, rows[sku]["aspect"]) for (sku, _), prompt in expected_prompts().items()}
    assert sent == wanted
    assert len(server.fake.submitted) == 150

    before = {
        p: p.read_bytes()
        for p in out.rglob("*")
        if p.is_file()
        and p.name != "run.json"
        and not p.name.startswith("state.sqlite")
        and p.name != ".runner.lock"
    }
    again = CliRunner().invoke(app, ["run", "m.yaml", "--base-url", server.url])
    assert again.exit_code == 0, again.stderr
    assert server.fake.counts["submissions"] == 150
    after = {p: p.read_bytes() for p in before}
    assert after == before


def test_run_with_fake_needs_no_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVOLINK_API_KEY", raising=False)
    quickstart = Path(__file__).parents[1] / "manifests" / "quickstart.yaml"
    result = CliRunner().invoke(app, ["run", str(quickstart), "--fake", "--out", "qs"])
    assert result.exit_code == 0, result.stderr
    table = pd.read_parquet(tmp_path / "qs" / "results.parquet")
    assert len(table) == 6 and (table["status"] == "completed").all()


def test_plan_and_schema_write_only_json_to_stdout(batch, monkeypatch):
    monkeypatch.chdir(batch.parent)
    schema = CliRunner().invoke(app, ["schema"])
    assert schema.exit_code == 0
    assert json.loads(schema.stdout)["title"] == "runner manifest"
    human = CliRunner().invoke(app, ["plan", "m.yaml"])
    assert human.exit_code == 0 and human.stdout == ""
    assert "150" in human.stderr


def test_fake_server_refuses_an_unknown_estimate_kind():
    result = CliRunner().invoke(app, ["fake-server", "--estimate", "sideways"])
    assert result.exit_code == 2 and "--estimate" in result.stderr


def test_report_prints_the_summary_of_an_output_dir_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quickstart = Path(__file__).parents[1] / "manifests" / "quickstart.yaml"
    assert CliRunner().invoke(app, ["run", str(quickstart), "--fake", "--out", "qs"]).exit_code == 0
    report = CliRunner().invoke(app, ["report", "qs"])
    assert report.exit_code == 0 and "completed" in report.stderr and "6" in report.stderr
    missing = CliRunner().invoke(app, ["report", "nowhere"])
    assert missing.exit_code == 2 and "holds no run" in missing.stderr
