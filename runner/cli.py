"""The command line: parses arguments, calls the library, turns errors into exit codes.

Exit codes: 0 every job completed; 1 some failed; 2 invalid input (nothing sent);
3 the API refused the key/quota/access; 130 interrupted (state saved).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer
from rich.console import Console

from . import __version__
from .errors import ManifestError, RunnerError, RunStopped
from .expand import JobList, Plan, plan_file
from .manifest import manifest_json_schema
from .mirror import SYNC_INTERVAL_S
from .objectstore import is_url, local_path
from .progress import make_reporter
from .select import Selection, selection_from_options
from .summary import plan_summary, print_plan, print_run_summary

app = typer.Typer(
    name="runner",
    help="Turn a YAML manifest into many Evolink image jobs; run them, resume them, "
    "and get verified files with a results table.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
T = TypeVar("T")

ManifestArg = Annotated[Path, typer.Argument(help="The manifest (YAML).", show_default=False)]
# Selectors, shared by plan and run: --rows, --only, --where intersect; then --sample, --limit.
RowsOpt = Annotated[str | None, typer.Option("--rows", help="Rows by 0-based index, e.g. 3,7-12.")]
OnlyOpt = Annotated[
    list[str] | None, typer.Option("--only", help="Job ids (repeat, or separate by commas).")
]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        help="A Jinja expression over the template context, e.g. "
        '\'style == "studio" and aspect == "2:3"\'.',
    ),
]
SampleOpt = Annotated[
    int | None, typer.Option("--sample", help="A deterministic random N of the selected jobs.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for --sample.")]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="The first N selected jobs, in plan order.")
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Only shard K of N (K from 0), split by job id; default "
        "output dir: outputs/<name>/shard-K-of-N.",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"runner {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """runner: manifests in, verified images and a results table out."""


def _guard(action: Callable[[], T]) -> T:
    """Run a command body; a RunnerError becomes one line on stderr and its exit code."""
    try:
        return action()
    except RunnerError as error:
        err.print(f"runner: error: {error}", markup=False)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err.print("runner: interrupted", markup=False)
        raise typer.Exit(130) from None


def _selection(
    rows: str | None,
    only: list[str] | None,
    where: str | None,
    sample: int | None,
    seed: int,
    limit: int | None,
    shard: str | None,
) -> Selection:
    return _guard(lambda: selection_from_options(rows, only, where, sample, seed, limit, shard))


def _plan_selected(manifest: Path, selection: Selection) -> tuple[Plan, JobList | None]:
    return _guard(lambda: selection.plan_file(manifest))


@app.command()
def validate(manifest: ManifestArg) -> None:
    """Check a manifest completely (schema, files, CSV, every rendered request and file
    name); sends nothing.

    Example: runner validate manifests/quickstart.yaml
    """
    plan = _guard(lambda: plan_file(manifest))
    err.print(
        f"ok: {manifest}: {len(plan)} jobs, {plan.unique_requests()} unique "
        f"requests, ~{plan.estimated_credits():g} credits",
        markup=False,
    )


@app.command()
def plan(
    manifest: ManifestArg,
    as_json: Annotated[
        bool, typer.Option("--json", help="Machine-readable plan on stdout.")
    ] = False,
    out: Annotated[
        str | None, typer.Option("--out", help="Output dir (or object-store URL) to compare with.")
    ] = None,
    rows: RowsOpt = None,
    only: OnlyOpt = None,
    where: WhereOpt = None,
    sample: SampleOpt = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    shard: ShardOpt = None,
) -> None:
    """Show the jobs, unique requests, estimated credits and first prompts; sends nothing.

    Example: runner plan manifests/marketing.yaml --json | jq .jobs
    """
    selection = _selection(rows, only, where, sample, seed, limit, shard)
    planned, selected = _plan_selected(manifest, selection)
    out_dir = planned.loaded.out_dir(out, selection.shard)
    summary = plan_summary(planned, out_dir, selected)
    if as_json:
        sys.stdout.write(json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    else:
        print_plan(err, summary)


@app.command()
def run(
    manifest: ManifestArg,
    out: Annotated[
        str | None,
        typer.Option(
            help="Output dir or object-store URL such as s3://bucket/prefix (default: the "
            "manifest's output, else outputs/<name>)."
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="API base URL (default: $EVOLINK_BASE_URL, else https://api.evolink.ai)."
        ),
    ] = None,
    fake: Annotated[
        bool, typer.Option("--fake", help="Run against the built-in fake server; no key needed.")
    ] = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=1000, help="Tasks in flight at once.")
    ] = None,
    rate: Annotated[float | None, typer.Option(min=0.001, help="Submissions per second.")] = None,
    max_attempts: Annotated[
        int | None, typer.Option(min=1, max=50, help="Attempts per job.")
    ] = None,
    task_timeout: Annotated[
        float | None, typer.Option(min=1, help="Seconds from submission to a final status.")
    ] = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Resubmit jobs that ended failed in an earlier run."),
    ] = False,
    rows: RowsOpt = None,
    only: OnlyOpt = None,
    where: WhereOpt = None,
    sample: SampleOpt = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    shard: ShardOpt = None,
    max_credits: Annotated[
        float | None,
        typer.Option(min=0, help="Stop submitting before reserved credits would pass this."),
    ] = None,
    sync_interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Object-store --out: seconds between uploads of new images and the journal.",
        ),
    ] = SYNC_INTERVAL_S,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Run the shards as Ray tasks (pip install -e '.[ray]'), then merge them into "
            "--out; shards write to OUT/shards/K-of-N.",
        ),
    ] = False,
    address: Annotated[
        str | None,
        typer.Option(help="With --ray: the cluster's address (default: start a local one)."),
    ] = None,
    shards: Annotated[
        int | None,
        typer.Option(min=1, max=10_000, help="With --ray: how many shards (default: 2 per CPU)."),
    ] = None,
) -> None:
    """Run a manifest; resumes if the output dir holds an earlier run of it.

    Examples:
      runner run manifests/quickstart.yaml --fake
      EVOLINK_API_KEY=... runner run manifests/marketing.yaml --concurrency 16
      runner run manifests/dataset.yaml --fake --ray --shards 4 --out s3://bucket/animals
    """
    from .batch import RunOptions, run_plan  # the engine's imports (pandas, httpx) load here

    shared: dict[str, Any] = {  # what a shard on Ray gets as well
        "base_url": base_url,
        "fake": fake,
        "concurrency": concurrency,
        "rate": rate,
        "max_attempts": max_attempts,
        "task_timeout": task_timeout,
        "retry_failed": retry_failed,
        "max_credits": max_credits,
        "sync_interval": sync_interval,
    }
    if ray or address is not None or shards is not None:
        chosen_flags = [rows, only, where, sample, limit, shard]
        _run_on_ray(
            manifest,
            ray=ray,
            selectors=any(flag is not None for flag in chosen_flags),
            out=out,
            address=address,
            shards=shards,
            **shared,
        )
        return
    selection = _selection(rows, only, where, sample, seed, limit, shard)
    planned, chosen = _plan_selected(manifest, selection)
    selected = None if chosen is None else _guard(lambda: planned.jobs_in(chosen))
    out_dir = planned.loaded.out_dir(out, selection.shard)
    reporter = make_reporter(err)
    options = RunOptions(
        out=out_dir,
        reporter=reporter,
        shards=selection.shard_count,
        keep_frame=False,  # the exit code comes from run.json: memory stays flat
        **shared,
    )
    stopped: RunStopped | None = None
    try:
        anyio.run(run_plan, planned, options, selected)
    except RunStopped as error:
        stopped = error
    except RunnerError as error:
        reporter.close()
        err.print(f"runner: error: {error}", markup=False)
        raise typer.Exit(error.exit_code) from None
    info = _guard(lambda: print_run_summary(err, out_dir))
    if stopped is not None:
        err.print(f"runner: {stopped}", markup=False)
        raise typer.Exit(stopped.exit_code)
    counts = info["latest"]["selected"]  # the exit code speaks of the selected jobs
    if counts["completed"] < counts["jobs"]:
        raise typer.Exit(1)


def _run_on_ray(manifest: Path, *, ray: bool, selectors: bool, **options: Any) -> None:
    from .distributed import run_on_ray

    def check() -> None:
        if not ray:
            raise ManifestError("--address and --shards go with --ray", field="--shards")
        if selectors:
            raise ManifestError(
                "--ray runs the whole manifest: --rows, --only, --where, --sample, --limit "
                "and --shard go without it",
                field="--ray",
            )

    _guard(check)
    reporter = make_reporter(err)
    outcome = _guard(lambda: run_on_ray(manifest, reporter=reporter, **options))
    for shard in outcome.shards:
        if shard.message:
            err.print(f"runner: shard {shard.shard}: {shard.message}", markup=False)
    merged = outcome.merge
    err.print(
        f"runner: {len(outcome.shards)} shards on Ray merged into {outcome.out}: {merged.jobs} "
        f"jobs, {merged.completed} completed, {merged.jobs - merged.completed} not completed",
        markup=False,
    )
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


@app.command()
def report(
    out: Annotated[str, typer.Argument(help="An output dir (or URL) of an earlier run.")],
) -> None:
    """Print the summary of an output dir again (counts, time, credits).

    Example: runner report outputs/quickstart
    """
    _guard(lambda: print_run_summary(err, out))


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Output dir of one run.", show_default=False)],
    b: Annotated[Path, typer.Argument(help="Output dir of the other.", show_default=False)],
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write compare.html (default: compare-A-vs-B beside A)."),
    ] = None,
) -> None:
    """Write a side-by-side page of two runs, paired by row, matrix values and sample.

    Example: runner compare outputs/spring-v1 outputs/spring-v2
    """
    from .compare import compare_runs

    page = _guard(lambda: compare_runs(a, b, out))
    err.print(f"wrote {page}", markup=False)


@app.command()
def merge(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Output dirs or object-store URLs (e.g. the shards).", show_default=False
        ),
    ],
    out: Annotated[str, typer.Option(help="The merged output dir or URL.", show_default=False)],
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            "-m",
            help="The manifest: order the jobs as it does and report missing ones.",
        ),
    ] = None,
) -> None:
    """Merge output dirs of one manifest into one dir laid out like a single run.

    Example: runner merge outputs/spring/shard-*-of-8 --out outputs/spring-all -m m.yaml
    """
    from .batch import exclusive_dir
    from .merge import merge_runs

    def action() -> None:
        with contextlib.nullcontext() if is_url(out) else exclusive_dir(local_path(out)):
            report = merge_runs(inputs, out, manifest)
        err.print(
            f"merged {len(inputs)} dirs into {out}: {report.jobs} jobs, "
            f"{report.completed} completed, {len(report.duplicates)} present twice"
            + (f", {len(report.missing)} missing from every input" if manifest is not None else ""),
            markup=False,
        )

    _guard(action)


@app.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editors) on stdout."""
    sys.stdout.write(json.dumps(manifest_json_schema(), indent=2) + "\n")


@app.command("fake-server")
def fake_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    api_key: Annotated[str | None, typer.Option(help="Only this key is accepted.")] = None,
    task_seconds: Annotated[str, typer.Option(help="Task duration range, 'MIN,MAX'.")] = "1,3",
    fail_rate: Annotated[float, typer.Option(help="Share of tasks that fail.")] = 0.0,
    fail_code: Annotated[str, typer.Option(help="Error code of failed tasks.")] = "service_error",
    error_rate: Annotated[float, typer.Option(help="Share of requests answered 500.")] = 0.0,
    truncate_rate: Annotated[float, typer.Option(help="Share of downloads cut short.")] = 0.0,
    rate_limit: Annotated[float | None, typer.Option(help="Submissions/s before 429.")] = None,
    burst: Annotated[int, typer.Option(help="Burst size for --rate-limit.")] = 1,
    whole_retry_after: Annotated[
        bool, typer.Option("--whole-retry-after", help="Retry-After in whole seconds.")
    ] = False,
    max_in_progress: Annotated[int | None, typer.Option(help="Unfinished tasks allowed.")] = None,
    link_ttl: Annotated[float, typer.Option(help="Seconds a result link lives.")] = 86400.0,
    small_images: Annotated[bool, typer.Option("--small-images", help="1/16-size PNGs.")] = False,
    latency: Annotated[float, typer.Option(help="Seconds added to every request.")] = 0.0,
    jitter: Annotated[float, typer.Option(help="Random extra latency, seconds.")] = 0.0,
    refuse_status: Annotated[
        int | None, typer.Option(help="Answer every submission with this status (401/402/403).")
    ] = None,
    estimate: Annotated[
        str,
        typer.Option(
            help="estimated_time: ceil, floor or round of the remaining "
            "seconds, constant (100) or none."
        ),
    ] = "ceil",
    linear_progress: Annotated[
        bool, typer.Option(help="progress grows with time (else 0 until done).")
    ] = True,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Serve the fake Evolink API on loopback (for trying runner and for tests).

    Example: runner fake-server --port 8765 --fail-rate 0.1 --rate-limit 5
    """
    from .fake import ESTIMATES, FakeOptions, serve

    if estimate not in ESTIMATES:
        err.print(f"runner: error: --estimate takes one of {', '.join(ESTIMATES)}", markup=False)
        raise typer.Exit(2)
    low, _, high = task_seconds.partition(",")
    try:
        seconds = (float(low), float(high or low))
    except ValueError:
        err.print("runner: error: --task-seconds takes 'MIN,MAX', e.g. 1,3", markup=False)
        raise typer.Exit(2) from None
    options = FakeOptions(
        api_key=api_key,
        refuse_status=refuse_status,
        task_seconds=seconds,
        latency=latency,
        jitter=jitter,
        fail_rate=fail_rate,
        fail_code=fail_code,
        error_rate=error_rate,
        truncate_rate=truncate_rate,
        rate_limit=rate_limit,
        burst=burst,
        max_in_progress=max_in_progress,
        link_ttl=link_ttl,
        small_images=small_images,
        estimate=estimate,
        linear_progress=linear_progress,
        whole_retry_after=whole_retry_after,
        seed=seed,
    )
    err.print(f"fake Evolink server on http://{host}:{port} (Ctrl-C to stop)", markup=False)
    serve(options, host=host, port=port)


def main(argv: list[str] | None = None) -> Any:
    """Console entry point."""
    return app(args=argv, prog_name="runner")
