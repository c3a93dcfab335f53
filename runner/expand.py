"""Expansion: rows × matrix × repeat → jobs, each a checked request with a stable id."""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import new_context
from jinja2.sandbox import SandboxedEnvironment

from .errors import ManifestError
from .evolink import canonical_model, request_problems
from .manifest import LoadedManifest, load_manifest
from .rows import Row, RowSource, open_rows, resolve_input

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ID_LENGTH = 16
_ORDINARY_NAME = re.compile(
    r"(?:[A-Za-z0-9_][A-Za-z0-9_ .-]{0,200}/)*[A-Za-z0-9_][A-Za-z0-9_ .-]{0,200}"
    r"\.(?:png|jpe?g|webp)",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\:*?\"<>|]")


@dataclass(slots=True)
class Job:
    """One image to make: a row × a matrix combination × a sample."""

    job_id: str
    row: int
    sample: int
    columns: Mapping[str, Any]
    matrix: Mapping[str, Any]
    request: Mapping[str, Any]
    filename: str  # relative to images/
    source: str = field(default="", compare=False)

    @property
    def prompt(self) -> str:
        return str(self.request["prompt"])

    @property
    def size(self) -> str | None:
        return self.request.get("size")

    @property
    def quality(self) -> str | None:
        return self.request.get("quality")

    @property
    def path(self) -> str:
        """The image's path relative to the output dir."""
        return f"images/{self.filename}"


KEEP_JOBS = 50_000  # Job objects kept in memory per list; beyond, they are rendered again
HEAD_JOBS = 5  # first jobs every list keeps (the plan shows their prompts)


class JobList:
    """Chosen jobs in plan order: always their ids and estimated credits, and the Job
    objects only while there are at most ``keep`` of them. A million Jobs take over a
    gigabyte, their ids 80 MB; a plan renders Jobs it did not keep again when asked."""

    def __init__(self, keep: int | None = None) -> None:
        self.ids: list[str] = []
        self.credits = 0.0
        self.head: list[Job] = []
        self._jobs: list[Job] | None = []
        self._keep = KEEP_JOBS if keep is None else keep

    def add(self, job: Job, credits: float) -> None:
        self.ids.append(job.job_id)
        self.credits += credits
        if len(self.head) < HEAD_JOBS:
            self.head.append(job)
        if self._jobs is not None:
            if len(self._jobs) < self._keep:
                self._jobs.append(job)
            else:
                self._jobs = None

    @property
    def kept(self) -> list[Job] | None:
        """Every Job of the list, or None when there were too many to keep."""
        return self._jobs

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Plan:
    """The distinct jobs of a manifest, in a stable order, and how they were counted.
    Holds every job's id; the Jobs themselves only for small manifests (``jobs`` and
    ``iter_jobs`` render the others again, in the same order)."""

    loaded: LoadedManifest
    all: JobList
    columns: tuple[str, ...]
    matrix_keys: tuple[str, ...]
    expanded: int  # combinations before identical requests were merged
    input_files: dict[str, Path]
    request_count: int  # distinct request bodies: samples of one request count once
    _id_set: set[str] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def job_ids(self) -> list[str]:
        return self.all.ids

    @property
    def jobs(self) -> list[Job]:
        """Every job as a list: for small manifests; large ones should iterate instead."""
        kept = self.all.kept
        return kept if kept is not None else list(self.iter_jobs())

    def id_set(self) -> set[str]:
        if self._id_set is None:
            self._id_set = set(self.all.ids)
        return self._id_set

    def __iter__(self) -> Iterator[Job]:
        return self.iter_jobs()

    def __len__(self) -> int:
        return len(self.all)

    def iter_jobs(self, wanted: Container[str] | None = None) -> Iterator[Job]:
        """The jobs (those whose id is in ``wanted``, if given), in plan order."""
        kept = self.all.kept
        jobs = iter(kept) if kept is not None else self._render_again()
        if wanted is None:
            return jobs
        return (job for job in jobs if job.job_id in wanted)

    def jobs_in(self, chosen: JobList) -> list[Job]:
        """The Jobs of a list made from this plan (rendered again if it did not keep them)."""
        kept = chosen.kept
        return kept if kept is not None else list(self.iter_jobs(set(chosen.ids)))

    def _render_again(self) -> Iterator[Job]:
        ids, known, position = self.all.ids, self.id_set(), 0
        for job in _Renderer(self.loaded).jobs(open_rows(self.loaded)):
            if position < len(ids) and job.job_id == ids[position]:
                position += 1
                yield job
            elif job.job_id not in known:
                break
        if position != len(ids):
            raise ManifestError(
                "the manifest or its input files changed while runner was reading them; run again",
                file=str(self.loaded.path),
            )

    def unique_requests(self) -> int:
        """Distinct request bodies: samples of one request count once."""
        return self.request_count

    def estimate(self, job: Job) -> float:
        """Credits one job is expected to reserve."""
        return credits_of(job, self.prices)

    @cached_property
    def prices(self) -> dict[str, float]:
        return self.loaded.manifest.price_table()

    def estimated_credits(self, jobs: Iterable[Job] | None = None) -> float:
        if jobs is None:
            return self.all.credits
        return float(sum(self.estimate(job) for job in jobs))


def credits_of(job: Job, prices: Mapping[str, float]) -> float:
    """Credits a job is expected to reserve, by its quality (the API's default: auto)."""
    return prices.get(job.quality or "auto", prices["auto"])


JobObserver = Callable[[Job], None]


def plan_file(path: str | Path, observe: JobObserver | None = None) -> Plan:
    """Load, expand and check every job of a manifest; sends nothing."""
    return plan_manifest(load_manifest(path), observe)


def plan_manifest(loaded: LoadedManifest, observe: JobObserver | None = None) -> Plan:
    """Expand and check every job in one streaming pass; raises ManifestError on the
    first problem. ``observe`` sees each distinct job once, in plan order."""
    with _gc_paused():
        return _plan(loaded, observe)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Expansion makes many long-lived objects and no cycles; the cyclic collector
    would rescan them all again and again (a third of the time on 100,000 rows)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _plan(loaded: LoadedManifest, observe: JobObserver | None) -> Plan:
    source = open_rows(loaded)
    renderer = _Renderer(loaded)
    everything = JobList()
    seen_ids: set[str] = set()
    requests: set[int] = set()
    names = _FilenameRegistry(loaded)
    prices = loaded.manifest.price_table()
    expanded = 0
    for job in renderer.jobs(source):
        expanded += 1
        if job.job_id in seen_ids:
            continue
        seen_ids.add(job.job_id)
        names.add(job, len(everything))
        requests.add(hash(_request_key(job.request)))
        everything.add(job, credits_of(job, prices))
        if observe is not None:
            observe(job)
    files = {"manifest": loaded.path}
    if source.csv_path is not None:
        files["rows"] = source.csv_path
    if renderer.template_path is not None:
        files["template"] = renderer.template_path
    return Plan(
        loaded,
        everything,
        source.columns,
        tuple(loaded.manifest.matrix),
        expanded,
        files,
        len(requests),
        seen_ids,
    )


def job_id_for(request: Mapping[str, Any], sample: int) -> str:
    """Stable id: a hash of the canonical request (model, prompt, size, quality,
    image_urls) and the sample index. callback_url does not change the image."""
    identity = [
        canonical_model(str(request.get("model"))),
        request.get("prompt"),
        request.get("size"),
        request.get("quality"),
        request.get("image_urls"),
        sample,
    ]
    return hashlib.sha256(_canonical_json(identity).encode()).hexdigest()[:ID_LENGTH]


def _request_key(request: Mapping[str, Any]) -> tuple[Any, ...]:
    urls = request.get("image_urls")
    return (
        request.get("model"),
        request.get("prompt"),
        request.get("size"),
        request.get("quality"),
        tuple(urls) if urls else None,
    )


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class _Renderer:
    """Compiles the manifest's templates once and renders them per combination."""

    def __init__(self, loaded: LoadedManifest) -> None:
        self.loaded = loaded
        m = loaded.manifest
        self.template_path: Path | None = None
        if m.template is not None:
            self.template_path = resolve_input(loaded, m.template, "template")
            self.env = _environment(self.template_path.parent)
            self.prompt: Renderable = self._compile_file(self.template_path)
        else:
            self.env = _environment(loaded.base_dir)
            self.prompt = self._compile(m.prompt or "", "prompt")
        self.filename = self._compile(m.filename, "filename")
        self.globals = dict(self.env.globals)
        self.request = {
            key: self._compile_value(value, ("request", key))
            for key, value in m.request.model_dump(exclude_none=True).items()
        }

    def jobs(self, source: RowSource) -> Iterator[Job]:
        m = self.loaded.manifest
        axes = list(m.matrix.items())
        combos = [
            dict(zip([k for k, _ in axes], values))
            for values in itertools.product(*[v for _, v in axes])
        ]
        for row in source.rows():
            for combo in combos:
                for sample in range(m.repeat):
                    yield self._job(row, combo, sample)

    def _job(self, row: Row, combo: dict[str, Any], sample: int) -> Job:
        m = self.loaded.manifest
        context = {**self.globals, **m.vars, **row.values, **combo}
        context["sample"], context["row"] = sample, row.index
        where = _Spot(row, combo, sample)
        prompt = self._render(self.prompt, context, where, "prompt").strip()
        request: dict[str, Any] = {"model": m.model, "prompt": prompt}
        for key, compiled in self.request.items():
            value = self._render_value(compiled, context, where, f"request.{key}")
            if value is not None:
                request[key] = value
        for key, problem in request_problems(request):
            field = key if key in ("prompt", "model") else f"request.{key}"
            raise self._error(problem, where, field)
        request["model"] = canonical_model(m.model)
        job_id = job_id_for(request, sample)
        context["job_id"] = job_id
        name = self._render(self.filename, context, where, "filename")
        filename = _checked_filename(name.strip())
        if isinstance(filename, str) and filename.startswith("!"):
            raise self._error(filename[1:], where, "filename")
        return Job(job_id, row.index, sample, row.values, combo, request, filename, row.source)

    def _render(
        self, template: Renderable, context: dict[str, Any], where: _Spot, field: str
    ) -> str:
        """Render with ``context`` as the template's own namespace (it already holds the
        globals): Jinja's ``render()`` would copy the globals for every call."""
        if isinstance(template, _Lookup):
            if template.name not in context:
                raise self._error(f"undefined variable {template.name!r}", where, field)
            return str(context[template.name])
        try:
            frame = new_context(self.env, template.name, template.blocks, context, shared=True)
            return self.env.concat(template.root_render_func(frame))
        except jinja2.UndefinedError as error:
            raise self._error(_undefined_message(error), where, field) from None
        except jinja2.TemplateError as error:
            raise self._error(f"template error: {error}", where, field) from None
        except Exception as error:  # any failure inside a user's template
            raise self._error(
                f"template error: {type(error).__name__}: {error}", where, field
            ) from None

    def _render_value(
        self,
        compiled: Any,
        context: dict[str, Any],
        where: _Spot,
        field: str,
        *,
        item: bool = False,
    ) -> Any:
        if isinstance(compiled, list):
            items = [
                self._render_value(part, context, where, field, item=True) for part in compiled
            ]
            kept = [item for item in items if item not in (None, "")]
            return kept or None
        if isinstance(compiled, (jinja2.Template, _Lookup, str)):
            raw = (
                compiled
                if isinstance(compiled, str)
                else self._render(compiled, context, where, field)
            )
            text = raw.strip()
            if not text:
                return None
            if field == "request.image_urls" and not item:
                return [text]
            if field == "request.n" and text.lstrip("-").isdigit():
                return int(text)
            return text
        return compiled

    def _compile_value(self, value: Any, loc: tuple[str, ...]) -> Any:
        if isinstance(value, list):
            return [self._compile_value(item, loc) for item in value]
        if isinstance(value, str):
            return self._compile(value, *loc) if ("{" in value) else value  # constants stay text
        return value

    def _compile(self, source: str, *loc: str) -> Renderable:
        plain = _PLAIN_LOOKUP.fullmatch(source)
        if plain and plain.group(1) not in self.env.globals:
            return _Lookup(plain.group(1))
        try:
            return self.env.from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise ManifestError(
                f"template syntax error (template line {error.lineno}): {error.message}",
                file=str(self.loaded.path),
                line=self.loaded.line_of(*loc),
                field=".".join(loc),
            ) from None

    def _compile_file(self, path: Path) -> jinja2.Template:
        try:
            source = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ManifestError("not UTF-8 text", file=str(path)) from None
        if "\x00" in source:
            raise ManifestError("not a template (binary content)", file=str(path))
        try:
            return self.env.from_string(source)
        except jinja2.TemplateSyntaxError as error:
            raise ManifestError(
                f"template syntax error: {error.message}", file=str(path), line=error.lineno
            ) from None

    def _error(self, message: str, where: _Spot, field: str) -> ManifestError:
        return ManifestError(message, file=str(self.loaded.path), where=str(where), field=field)


def _environment(folder: Path) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        loader=jinja2.FileSystemLoader(str(folder)),
        keep_trailing_newline=False,
    )


@dataclass(frozen=True, slots=True)
class _Lookup:
    """A template that is only ``{{ name }}``: a dict lookup renders it, with the same
    result and the same error for an undefined name as Jinja would give."""

    name: str


Renderable = jinja2.Template | _Lookup
_PLAIN_LOOKUP = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(slots=True)
class _Spot:
    """Which combination is being rendered; described only when an error needs it."""

    row: Row
    combo: Mapping[str, Any]
    sample: int

    def __str__(self) -> str:
        return _describe(self.row.index, self.row.source, self.combo, self.sample)


def _describe(row: int, source: str, combo: Mapping[str, Any], sample: int) -> str:
    parts = [f"row {row} ({source})"]
    parts.extend(f"{key}={value}" for key, value in combo.items())
    parts.append(f"sample {sample}")
    return ", ".join(parts)


def _undefined_message(error: jinja2.UndefinedError) -> str:
    text = str(error.message or error)
    found = re.match(r"'([^']+)' is undefined", text)
    if found:
        return f"undefined variable {found.group(1)!r}"
    return text


def _checked_filename(name: str) -> str:
    """The file name if it is safe, else '!' and the reason (kept out of exceptions
    so the caller can say which row made it)."""
    if _ORDINARY_NAME.fullmatch(name):
        return name  # the common case, decided by one regex
    if not name:
        return "!the file name is empty"
    if _CONTROL.search(name):
        return f"!{name!r} has a character not allowed in file names"
    if name.startswith("/"):
        return f"!{name!r} is absolute; it must stay inside images/"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"!{name!r} leaves or escapes images/ (empty, '.' or '..' part)"
    if any(part.startswith(".") for part in parts):
        return f"!{name!r}: hidden names (starting with '.') are not allowed"
    if any(len(part.encode()) > 255 for part in parts):
        return f"!{name!r}: a part is longer than 255 bytes"
    if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
        return f"!{name!r} must end in one of {', '.join(IMAGE_SUFFIXES)}"
    return name


class _FilenameRegistry:
    """Refuses two jobs writing one file (case-insensitive, for macOS and Windows users)
    and a file that is also another file's folder. Keeps names and positions, not Jobs."""

    def __init__(self, loaded: LoadedManifest) -> None:
        self._loaded = loaded
        self._files: dict[str, int] = {}
        self._folders: set[str] = set()

    def add(self, job: Job, position: int) -> None:
        key = job.filename.casefold()
        other = self._files.get(key)
        if other is not None:
            first = self._job_at(other)
            raise ManifestError(
                f"{job.filename!r} is also the file name of "
                f"{_describe(first.row, first.source, first.matrix, first.sample)}; "
                "make the filename template unique",
                file=str(self._loaded.path),
                line=self._loaded.line_of("filename"),
                field="filename",
                where=_describe(job.row, job.source, job.matrix, job.sample),
            )
        if "/" in key or self._folders:
            parts = key.split("/")
            folders = ["/".join(parts[:i]) for i in range(1, len(parts))]
            if key in self._folders or any(folder in self._files for folder in folders):
                raise ManifestError(
                    f"{job.filename!r} is both a file and a folder of another job's file",
                    file=str(self._loaded.path),
                    field="filename",
                    where=_describe(job.row, job.source, job.matrix, job.sample),
                )
            self._folders.update(folders)
        self._files[key] = position

    def _job_at(self, position: int) -> Job:
        """Render the manifest again up to a job (only to describe a clash)."""
        seen: set[str] = set()
        for job in _Renderer(self._loaded).jobs(open_rows(self._loaded)):
            if job.job_id not in seen:
                if len(seen) == position:
                    return job
                seen.add(job.job_id)
        raise AssertionError("position beyond the plan")
