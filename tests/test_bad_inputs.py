"""Every kind of bad input: exit 2, one line on stderr naming the culprit, nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from runner.cli import app

CSV = "name,url\nfox,https://example.com/fox.png\nowl,https://example.com/owl.png\n"
BASE = {
    "version": "version: 1",
    "name": "name: t",
    "rows": "rows: data.csv",
    "matrix": "matrix: {style: [a, b]}",
    "prompt": 'prompt: "A {{ name }} in {{ style }} style"',
    "request": 'request: {size: "1:1", quality: low}',
}


def manifest(**changes: str | None) -> str:
    parts = {**BASE, **changes}
    return "\n".join(v for v in parts.values() if v is not None) + "\n"


# (case id, files to write, substrings the one-line error must contain)
CASES: list[tuple[str, dict[str, str | bytes], list[str]]] = [
    ("yaml-syntax", {"m.yaml": "version: 1\nrows: [a\nprompt: x\n"}, ["m.yaml:", "invalid YAML"]),
    ("unknown-top-key", {"m.yaml": manifest(colour="colour: red")}, ["m.yaml:7", "colour"]),
    (
        "unknown-limits-key",
        {"m.yaml": manifest(limits="limits: {concurency: 3}")},
        ["limits.concurency", "unknown key"],
    ),
    ("unknown-request-key", {"m.yaml": manifest(request="request: {seed: 3}")}, ["request.seed"]),
    ("missing-version", {"m.yaml": manifest(version=None)}, ["version", "required"]),
    ("wrong-version", {"m.yaml": manifest(version="version: 2")}, ["m.yaml:1", "version"]),
    (
        "template-and-prompt",
        {"m.yaml": manifest(template="template: t.j2"), "t.j2": "x"},
        ["exactly one"],
    ),
    ("neither-template-nor-prompt", {"m.yaml": manifest(prompt=None)}, ["exactly one"]),
    (
        "undefined-variable",
        {"m.yaml": manifest(prompt='prompt: "{{ nmae }}"')},
        ["nmae", "row 0", "prompt"],
    ),
    (
        "sandbox-class-escape",
        {"m.yaml": manifest(prompt="prompt: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"")},
        ["prompt", "__class__"],
    ),
    (
        "sandbox-globals-escape",
        {"m.yaml": manifest(prompt='prompt: "{{ cycler.__init__.__globals__.os }}"')},
        ["prompt"],
    ),
    (
        "sandbox-format-escape",
        {"m.yaml": manifest(prompt="prompt: \"{{ '{0.__class__}'.format(name) }}\"")},
        ["prompt"],
    ),
    ("empty-prompt", {"m.yaml": manifest(prompt="prompt: \"{{ '' }}  \"")}, ["prompt", "empty"]),
    (
        "overlong-prompt",
        {"m.yaml": manifest(prompt="prompt: \"{{ 'x' * 2001 }}\"")},
        ["prompt", "2001 characters"],
    ),
    ("bad-size", {"m.yaml": manifest(request='request: {size: "4:3"}')}, ["request.size", "4:3"]),
    (
        "bad-quality",
        {"m.yaml": manifest(request="request: {quality: ultra}")},
        ["request.quality", "ultra"],
    ),
    ("n-not-one", {"m.yaml": manifest(request="request: {n: 2}")}, ["request.n"]),
    (
        "image-url-not-http",
        {"m.yaml": manifest(request='request: {image_urls: ["ftp://x/a.png"]}')},
        ["request.image_urls[0]", "ftp://x/a.png"],
    ),
    (
        "too-many-image-urls",
        {
            "m.yaml": manifest(
                request="request: {image_urls: ["
                + ", ".join(f"'https://e.com/{i}.png'" for i in range(17))
                + "]}"
            )
        },
        ["request.image_urls", "17"],
    ),
    (
        "callback-not-https",
        {"m.yaml": manifest(request="request: {callback_url: 'http://example.com/cb'}")},
        ["request.callback_url", "HTTPS"],
    ),
    (
        "callback-internal-ip",
        {"m.yaml": manifest(request="request: {callback_url: 'https://10.1.2.3/cb'}")},
        ["request.callback_url", "internal"],
    ),
    (
        "callback-too-long",
        {"m.yaml": manifest(request="request: {callback_url: 'https://e.com/" + "a" * 2050 + "'}")},
        ["request.callback_url", "2048"],
    ),
    ("unsupported-model", {"m.yaml": manifest(model="model: dall-e-3")}, ["model", "dall-e-3"]),
    (
        "filename-escapes",
        {"m.yaml": manifest(filename='filename: "../{{ name }}-{{ style }}.png"')},
        ["filename", ".."],
    ),
    (
        "filename-absolute",
        {"m.yaml": manifest(filename='filename: "/tmp/{{ name }}-{{ style }}.png"')},
        ["filename", "absolute"],
    ),
    (
        "filename-collision",
        {"m.yaml": manifest(filename='filename: "{{ name }}.png"')},
        ["filename", "also the file name"],
    ),
    (
        "filename-not-image",
        {"m.yaml": manifest(filename='filename: "{{ name }}-{{ style }}.txt"')},
        ["filename", ".png"],
    ),
    (
        "filename-case-collision",
        {
            "m.yaml": manifest(
                filename="filename: \"{{ name if style == 'a' else name | upper }}.png\""
            )
        },
        ["filename", "also the file name"],
    ),
    ("csv-missing", {"m.yaml": manifest(rows="rows: nope.csv")}, ["nope.csv", "not found"]),
    (
        "csv-too-many-fields",
        {"data.csv": CSV + "cat,https://e.com/c.png,extra\n"},
        ["data.csv:4", "too many fields"],
    ),
    ("csv-too-few-fields", {"data.csv": CSV + "cat\n"}, ["data.csv:4", "too few fields"]),
    ("csv-empty-header-name", {"data.csv": "name,,url\nfox,x,y\n"}, ["data.csv:1", "empty name"]),
    ("csv-duplicate-header", {"data.csv": "name,name\nfox,owl\n"}, ["data.csv:1", "duplicate"]),
    ("csv-no-data-rows", {"data.csv": "name,url\n"}, ["data.csv", "no data rows"]),
    ("csv-empty-file", {"data.csv": ""}, ["data.csv", "empty"]),
    (
        "csv-binary",
        {"data.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01"},
        ["data.csv", "binary"],
    ),
    ("csv-not-utf8", {"data.csv": b"name,url\n\xff\xfe\xfa,x\n"}, ["data.csv", "UTF-8"]),
    (
        "csv-unclosed-quote",
        {"data.csv": CSV + '"cat,https://e.com/c.png\n'},
        ["data.csv:4", "malformed CSV"],
    ),
    ("csv-reserved-column", {"data.csv": "name,row\nfox,1\n"}, ["data.csv:1", "reserved"]),
    ("csv-column-is-matrix-key", {"data.csv": "name,style\nfox,x\n"}, ["data.csv:1", "style"]),
    ("manifest-binary", {"m.yaml": b"\x00\x01\x02\xff\xfe"}, ["m.yaml"]),
    ("manifest-missing", {}, ["m.yaml", "no such file"]),
    ("manifest-is-a-list", {"m.yaml": "- a\n- b\n"}, ["m.yaml", "mapping"]),
    ("manifest-empty", {"m.yaml": ""}, ["m.yaml", "empty"]),
    (
        "template-missing",
        {"m.yaml": manifest(prompt="template: missing.j2")},
        ["template", "missing.j2"],
    ),
    (
        "template-syntax-error",
        {"m.yaml": manifest(prompt="template: t.j2"), "t.j2": "line one\n{{ name }\n"},
        ["t.j2:2", "syntax"],
    ),
    (
        "template-runtime-error",
        {"m.yaml": manifest(prompt='prompt: "{{ 1 / 0 }}"')},
        ["prompt", "ZeroDivisionError"],
    ),
    (
        "concurrency-zero",
        {"m.yaml": manifest(limits="limits: {concurrency: 0}")},
        ["limits.concurrency"],
    ),
    ("rate-negative", {"m.yaml": manifest(limits="limits: {rate: -1}")}, ["limits.rate"]),
    ("matrix-key-is-var", {"m.yaml": manifest(vars="vars: {style: x}")}, ["style", "matrix"]),
    ("duplicate-yaml-key", {"m.yaml": manifest() + "name: again\n"}, ["m.yaml:7", "duplicate key"]),
    ("name-not-plain", {"m.yaml": manifest(name="name: ../elsewhere")}, ["name", "plain"]),
    ("repeat-zero", {"m.yaml": manifest(repeat="repeat: 0")}, ["repeat"]),
    ("matrix-axis-empty", {"m.yaml": manifest(matrix="matrix: {style: []}")}, ["matrix"]),
    ("inline-rows-empty", {"m.yaml": manifest(rows="rows: []")}, ["rows"]),
]


def _write_case(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    files = {"m.yaml": manifest(), "data.csv": CSV, **files} if files else {"data.csv": CSV}
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (tmp_path / name).write_bytes(data)
    return tmp_path / "m.yaml"


def _assert_one_clear_line(result, expected: list[str]) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for part in expected:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validate_rejects_bad_input_with_one_line(tmp_path, monkeypatch, files, expected):
    monkeypatch.chdir(tmp_path)
    path = _write_case(tmp_path, files)
    result = CliRunner().invoke(app, ["validate", path.name])
    _assert_one_clear_line(result, expected)
    assert result.stdout == ""


@pytest.mark.parametrize(("files", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_run_rejects_bad_input_and_sends_nothing(tmp_path, monkeypatch, loopback, files, expected):
    server = loopback()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-test")
    path = _write_case(tmp_path, files)
    result = CliRunner().invoke(app, ["run", path.name, "--base-url", server.url])
    _assert_one_clear_line(result, expected)
    assert sum(server.fake.counts.values()) == 0
    assert not (tmp_path / "outputs").exists()


def test_there_are_many_kinds_of_bad_input():
    assert len(CASES) >= 35
