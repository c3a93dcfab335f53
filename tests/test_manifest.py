"""Manifest schema and loading."""

from __future__ import annotations

import pytest

from runner import ManifestError, load_manifest
from runner.manifest import manifest_json_schema


def test_name_defaults_to_the_file_stem(write):
    assert load_manifest(write("spring.yaml", "version: 1\nprompt: p\n")).name == "spring"


def test_limits_have_sensible_defaults(write):
    limits = load_manifest(write("m.yaml", "version: 1\nprompt: p\n")).manifest.limits
    assert (limits.concurrency, limits.rate, limits.max_attempts) == (8, None, 4)


def test_error_points_at_the_line_of_the_bad_value(write):
    path = write("m.yaml", "version: 1\nprompt: p\nlimits:\n  rate: 2\n  concurrency: -1\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert caught.value.line == 5 and caught.value.field == "limits.concurrency"


def test_json_schema_forbids_unknown_keys():
    schema = manifest_json_schema()
    assert schema["additionalProperties"] is False
    assert "rows" in schema["properties"] and "limits" in schema["properties"]


def test_repr_of_a_loaded_manifest_is_short(write):
    loaded = load_manifest(write("m.yaml", "version: 1\nprompt: p\n"))
    assert repr(loaded) == f"LoadedManifest({str(loaded.path)!r}, name='m')"
