"""The manifest (version 1): its schema, and loading it with errors that name the line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ManifestError
from .evolink import MODEL, QUALITIES
from .objectstore import is_url

RESERVED_NAMES = ("row", "sample", "job_id")
DEFAULT_FILENAME = "{{ job_id }}.png"
DEFAULT_PRICING = {"low": 1.0, "medium": 2.5, "high": 6.0, "auto": 2.5}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """How hard runner may push the API."""

    concurrency: int = Field(8, ge=1, le=1000, description="Tasks in flight at once.")
    rate: float | None = Field(
        None, gt=0, le=1000, description="Submissions per second; unset: adapt to the API."
    )
    max_attempts: int = Field(4, ge=1, le=50, description="Attempts per job for retryable faults.")
    task_timeout: float = Field(
        900, gt=0, le=86400, description="Seconds from submission to a final status."
    )


class Request(_Strict):
    """Further request fields; string values are Jinja templates."""

    size: str | None = None
    quality: str | None = None
    image_urls: list[str] | str | None = None
    n: int | str | None = None
    callback_url: str | None = None


class Manifest(_Strict):
    """A batch of image generations: templates expanded over rows × matrix × repeat."""

    version: Literal[1] = Field(description="Manifest format version; only 1 exists.")
    name: str | None = Field(None, description="Default output dir name; the file stem if unset.")
    model: str = Field(MODEL, description="The API model (not a template).")
    rows: str | list[dict[str, Scalar | list[Scalar]]] | None = Field(
        None, description="CSV path relative to the manifest, or an inline list of mappings."
    )
    vars: dict[str, Any] = Field(default_factory=dict, description="Constants for templates.")
    matrix: dict[str, list[Scalar]] = Field(
        default_factory=dict, description="Cartesian product with every row."
    )
    repeat: int = Field(1, ge=1, le=10000, description="Samples per combination.")
    template: str | None = Field(
        None, description="Prompt template file, relative to the manifest."
    )
    prompt: str | None = Field(None, description="Inline prompt template.")
    request: Request = Field(default_factory=lambda: Request())
    filename: str = Field(DEFAULT_FILENAME, description="Image path under images/ (a template).")
    output: str | None = Field(None, description="Output dir, relative to the current dir.")
    pricing: dict[Literal["low", "medium", "high", "auto"], float] | None = Field(
        None, description="Credits per image by quality, for estimates."
    )
    limits: Limits = Field(default_factory=lambda: Limits())

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and (not _PLAIN_NAME.match(value) or set(value) <= {"."}):
            raise ValueError(f"{value!r} must be a plain directory name (letters, digits, . _ -)")
        return value

    @field_validator("vars", "matrix")
    @classmethod
    def _identifier_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not _IDENTIFIER.match(key):
                raise ValueError(f"{key!r} is not a valid template variable name")
            if key in RESERVED_NAMES:
                raise ValueError(f"{key!r} is reserved ({', '.join(RESERVED_NAMES)})")
        return value

    @field_validator("matrix")
    @classmethod
    def _non_empty_axes(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"matrix key {key!r} has no values")
        return value

    @field_validator("pricing")
    @classmethod
    def _non_negative(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for quality, credits in (value or {}).items():
            if credits < 0:
                raise ValueError(f"{quality}: credits cannot be negative")
        return value

    def price_table(self) -> dict[str, float]:
        return {**DEFAULT_PRICING, **{str(k): v for k, v in (self.pricing or {}).items()}}


assert set(DEFAULT_PRICING) == set(QUALITIES)


class LoadedManifest:
    """A validated manifest with where it came from, so paths and errors can be resolved."""

    def __init__(self, path: Path, manifest: Manifest, lines: _LineIndex) -> None:
        self.path = path
        self.manifest = manifest
        self.lines = lines

    @property
    def name(self) -> str:
        return self.manifest.name or self.path.stem

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def out_dir(
        self, out: str | Path | None = None, shard: tuple[int, int] | None = None
    ) -> str | Path:
        """``--out`` exactly as given, else the manifest's ``output``, else
        ``outputs/<name>`` (a shard: ``.../shard-K-of-N`` below it); all relative to the
        current dir. An object-store URL stays a string."""
        if out is not None:
            return out if is_url(out) else Path(out)
        output = self.manifest.output
        if output is not None and is_url(output):
            part = f"/shard-{shard[0]}-of-{shard[1]}" if shard else ""
            return output.rstrip("/") + part
        base = Path(output) if output else Path("outputs") / self.name
        return base / f"shard-{shard[0]}-of-{shard[1]}" if shard else base

    def line_of(self, *loc: str | int) -> int | None:
        return self.lines.line_of(loc)

    def error(self, message: str, *loc: str | int, where: str | None = None) -> ManifestError:
        """A ManifestError pointing at the manifest line of ``loc``."""
        field = _dotted(loc) if loc else None
        return ManifestError(
            message, file=str(self.path), line=self.line_of(*loc), field=field, where=where
        )

    def __repr__(self) -> str:
        return f"LoadedManifest({str(self.path)!r}, name={self.name!r})"


def load_manifest(path: str | Path) -> LoadedManifest:
    """Read and validate a manifest file; raises ManifestError naming file, line and field."""
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ManifestError("no such file", file=shown) from None
    except IsADirectoryError:
        raise ManifestError("is a directory, not a manifest file", file=shown) from None
    except UnicodeDecodeError as error:
        raise ManifestError(f"not UTF-8 text (byte {error.start})", file=shown) from None
    except OSError as error:
        raise ManifestError(error.strerror or str(error), file=shown) from None
    if "\x00" in text:
        raise ManifestError("not a YAML file (binary content)", file=shown)
    data, lines = _parse_yaml(text, shown)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ManifestError(f"a manifest must be a mapping, this is {kind}", file=shown, line=1)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        raise _manifest_error(error, shown, lines) from None
    loaded = LoadedManifest(path, manifest, lines)
    _check_consistency(loaded)
    return loaded


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of manifest version 1, for editors."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "runner manifest"
    return schema


def _check_consistency(loaded: LoadedManifest) -> None:
    m = loaded.manifest
    if (m.template is None) == (m.prompt is None):
        which = "both are given" if m.template is not None else "neither is given"
        raise loaded.error(f"give exactly one of 'template' and 'prompt' ({which})", "template")
    if isinstance(m.rows, list) and not m.rows:
        raise loaded.error("the inline row list is empty", "rows")
    for key in m.matrix:
        if key in m.vars:
            raise loaded.error(f"{key!r} is both a matrix key and a var", "matrix", key)
    if isinstance(m.rows, list):
        for index, row in enumerate(m.rows):
            for key in row:
                if key in RESERVED_NAMES:
                    raise loaded.error(f"{key!r} is a reserved name", "rows", index, key)
                if key in m.matrix:
                    raise loaded.error(f"{key!r} is both a column and a matrix key", "rows", index)


class _LineIndex:
    """Maps a path of keys/indexes in the YAML document to its 1-based line."""

    def __init__(self, root: yaml.Node | None) -> None:
        self._root = root

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        node = self._root
        line = node.start_mark.line + 1 if node is not None else None
        for key in loc:
            node = _child(node, key)
            if node is None:
                break
            line = node.start_mark.line + 1
        return line


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.value == key:
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        return node.value[key]
    return None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a repeated key is almost always a typo."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def _parse_yaml(text: str, shown: str) -> tuple[Any, _LineIndex]:
    try:
        root = yaml.compose(text, Loader=_StrictLoader)
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        problem = error.problem or error.context or "invalid YAML"
        raise ManifestError(f"invalid YAML: {problem}", file=shown, line=line) from None
    except yaml.YAMLError as error:
        raise ManifestError(f"invalid YAML: {error}", file=shown) from None
    return data, _LineIndex(root)


def _manifest_error(error: ValidationError, shown: str, lines: _LineIndex) -> ManifestError:
    first = error.errors()[0]
    loc = _clean_loc(first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = f"unknown key {str(loc[-1])!r}" if loc else "unknown key"
    elif first["type"] == "missing":
        message = "this key is required"
    elif "input" in first and first["type"] not in ("value_error",):
        message = f"{message} (got {_short(first['input'])})"
    message = message.removeprefix("Value error, ")
    return ManifestError(message, file=shown, line=lines.line_of(loc), field=_dotted(loc) or None)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union-branch labels (e.g. 'str', 'list[...]') from a location."""
    cleaned: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool")):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
