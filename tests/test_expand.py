"""Expansion: rows × matrix × repeat, rendering rules, stable ids."""

from __future__ import annotations

import pytest

from runner import ManifestError, load_manifest
from runner.expand import job_id_for, plan_manifest


def plan_of(write, text: str, **files: str):
    return plan_manifest(load_manifest(write("m.yaml", text, **files)))


def test_jobs_are_rows_times_matrix_times_repeat_in_stable_order(write):
    plan = plan_of(
        write,
        """
        version: 1
        rows: [{a: x}, {a: y}]
        matrix: {s: [1, 2, 3]}
        repeat: 2
        prompt: "{{ a }} {{ s }} {{ sample }} {{ row }}"
        """,
    )
    assert len(plan.jobs) == 12
    assert [(j.row, j.matrix["s"], j.sample) for j in plan.jobs[:4]] == [
        (0, 1, 0),
        (0, 1, 1),
        (0, 2, 0),
        (0, 2, 1),
    ]
    assert plan.jobs[-1].prompt == "y 3 1 1"


def test_csv_values_stay_text_and_inline_rows_keep_yaml_types(write):
    write("d.csv", "code,missing\n007,NA\n")
    csv_plan = plan_of(write, "version: 1\nrows: d.csv\nprompt: '{{ code }}/{{ missing }}'\n")
    assert csv_plan.jobs[0].prompt == "007/NA"
    assert csv_plan.jobs[0].columns == {"code": "007", "missing": "NA"}
    inline = plan_of(write, "version: 1\nrows: [{n: 7}]\nprompt: '{{ n + 1 }}'\n")
    assert inline.jobs[0].prompt == "8"


def test_utf8_bom_and_quoted_newlines_are_read(write):
    write("d.csv", '\ufeffname,notes\n"a, b","line 1\nline 2"\n'.encode())
    plan = plan_of(write, "version: 1\nrows: d.csv\nprompt: '{{ name }}|{{ notes }}'\n")
    assert plan.jobs[0].prompt == "a, b|line 1\nline 2"


def test_row_columns_override_vars(write):
    plan = plan_of(
        write, "version: 1\nvars: {a: var}\nrows: [{a: col}, {b: 1}]\nprompt: '{{ a }}'\n"
    )
    assert [j.prompt for j in plan.jobs] == ["col", "var"]


def test_empty_request_fields_are_left_out_and_empty_urls_dropped(write):
    plan = plan_of(
        write,
        """
        version: 1
        rows: [{u: "", s: ""}, {u: "https://e.com/a.png", s: "2:3"}]
        prompt: p{{ row }}
        request: {size: "{{ s }}", image_urls: ["{{ u }}", "https://e.com/b.png"]}
        """,
    )
    assert "size" not in plan.jobs[0].request
    assert plan.jobs[0].request["image_urls"] == ["https://e.com/b.png"]
    assert plan.jobs[1].request["image_urls"] == ["https://e.com/a.png", "https://e.com/b.png"]
    assert plan.jobs[1].request["size"] == "2:3"


def test_prompt_is_stripped(write):
    plan = plan_of(write, "version: 1\nprompt: |\n\n  hello\n\n")
    assert plan.jobs[0].prompt == "hello"


def test_identical_requests_run_once(write):
    plan = plan_of(write, "version: 1\nrows: [{a: 1}, {a: 1}, {a: 2}]\nprompt: 'x{{ a }}'\n")
    assert len(plan.jobs) == 2 and plan.expanded == 3


def test_job_id_depends_on_the_request_and_sample_only():
    base = {"model": "gpt-image-1.5-beta", "prompt": "p", "size": "1:1"}
    assert job_id_for(base, 0) == job_id_for(dict(base), 0)
    assert job_id_for(base, 0) != job_id_for(base, 1)
    assert job_id_for(base, 0) != job_id_for({**base, "prompt": "q"}, 0)
    assert job_id_for(base, 0) == job_id_for({**base, "callback_url": "https://e.com"}, 0)
    assert job_id_for(base, 0) == job_id_for({**base, "model": "gpt-image-1.5-lite"}, 0)


def test_editing_one_row_changes_only_its_jobs(write):
    text = "version: 1\nrows: d.csv\nrepeat: 2\nprompt: '{{ name }}'\n"
    write("d.csv", "name\na\nb\nc\n")
    before = [j.job_id for j in plan_of(write, text).jobs]
    write("d.csv", "name\na\nB\nc\n")
    after = [j.job_id for j in plan_of(write, text).jobs]
    assert [b == a for b, a in zip(before, after)] == [True, True, False, False, True, True]


def test_legacy_model_alias_is_sent_as_the_current_model(write):
    plan = plan_of(write, "version: 1\nmodel: gpt-image-1.5-lite\nprompt: p\n")
    assert plan.jobs[0].request["model"] == "gpt-image-1.5-beta"


def test_filename_may_use_job_id_and_defaults_to_it(write):
    plan = plan_of(write, "version: 1\nprompt: p\n")
    assert plan.jobs[0].path == f"images/{plan.jobs[0].job_id}.png"


def test_template_file_is_relative_to_the_manifest_and_may_include(write):
    write("t/base.j2", "{% include 'part.j2' %} {{ x }}", **{"t/part.j2": "hello"})
    plan = plan_of(write, "version: 1\nvars: {x: 1}\ntemplate: t/base.j2\n")
    assert plan.jobs[0].prompt == "hello 1"


def test_error_names_the_row_and_matrix_values(write):
    with pytest.raises(ManifestError) as caught:
        plan_of(write, "version: 1\nrows: [{a: 1}, {b: 2}]\nmatrix: {m: [q]}\nprompt: '{{ a }}'\n")
    assert "row 1" in str(caught.value) and "m=q" in str(caught.value)
    assert "undefined variable 'a'" in str(caught.value)


def test_estimated_credits_follow_the_price_table(write):
    plan = plan_of(
        write,
        "version: 1\nrows: [{q: low}, {q: high}, {q: ''}]\nprompt: p{{ row }}\n"
        "request: {quality: '{{ q }}'}\npricing: {high: 10}\n",
    )
    assert plan.estimated_credits() == 1 + 10 + 2.5
