"""The ``qmtl`` command line. Logging is configured here, at the edge, and nowhere else."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click
import structlog

from qmtl.errors import QmtlError

log = structlog.get_logger(__name__)


def configure_logging(level: str = "warning") -> None:
    """Console rendering on a TTY, JSON lines otherwise."""
    import logging

    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def load_object(target: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable) or load
    ``path/to/file.py:attribute``; call the attribute if it is a factory function rather than a
    pipeline."""
    from qmtl.pipeline import Pipeline

    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise click.BadParameter(
            f"{target!r} is not module:attribute or file.py:attribute (e.g. strategy:pipeline "
            "or ./strategy.py:pipeline)"
        )
    if "" not in sys.path:
        sys.path.insert(0, "")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        module = _load_file(module_name)
    else:
        module = _import(module_name)
    module_name = module.__name__
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        raise click.BadParameter(f"module '{module_name}' has no attribute '{attribute}'") from None
    if not isinstance(obj, Pipeline) and callable(obj):
        try:
            obj = obj()
        except QmtlError:
            raise
        except Exception as error:  # the user's factory failed
            raise click.ClickException(
                f"{target}: calling {attribute}() to build the pipeline failed: "
                f"{type(error).__name__}: {error}"
            ) from error
    if not isinstance(obj, Pipeline):
        raise click.BadParameter(f"{target} is {type(obj).__name__}, not a qmtl Pipeline")
    return obj


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise click.BadParameter(f"cannot import module '{module_name}': {error}") from error
    except Exception as error:  # the user's module failed while importing
        raise click.ClickException(
            f"importing module '{module_name}' failed: {type(error).__name__}: {error}; run "
            f'python -c "import {module_name}" to see the traceback'
        ) from error


def _load_file(name: str) -> Any:
    """Load a strategy file as a module named after it, its folder importable (as when
    running ``python path/to/file.py``)."""
    import importlib.util
    from pathlib import Path

    path = Path(name)
    if not path.suffix:
        path = path.with_suffix(".py")
    if not path.is_file():
        raise click.BadParameter(
            f"file '{path}' does not exist; pass a .py file (./strategy.py:pipeline) or a module "
            "importable from the current directory (strategy:pipeline)"
        )
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"file '{path}' cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's file failed while running
        del sys.modules[path.stem]
        raise click.ClickException(
            f"running file '{path}' failed: {type(error).__name__}: {error}; run python "
            f"{path} to see the traceback"
        ) from error
    return module


class QmtlGroup(click.Group):
    """Turns QmtlError into a one-line message and exit code 1 instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QmtlError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=QmtlGroup)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.version_option(package_name="qmtl-core")
def cli(log_level: str) -> None:
    """QMTL: run strategy pipelines on any engine."""
    configure_logging(log_level)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


@cli.command()
@click.argument("target")
@click.option("--engine", default=None, help="Engine kind (default: settings, else 'local')")
@click.option("--state", default=None, help="State backend kind (default: settings, else 'memory')")
@click.option("--ts", type=float, default=None, help="Event time of a one-shot run (epoch s)")
@click.option("--stream", is_flag=True, help="Stream the sources to their end in event time")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON")
@click.option(
    "--output",
    "output",
    type=click.Choice(["jsonl", "csv"]),
    default=None,
    help="With --stream: write every final bucket (node, interval, ts, value) to stdout",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="With --stream: show progress on stderr (only when it is a terminal)",
)
@click.option(
    "--keep-history",
    is_flag=True,
    help="With --stream: keep the run's whole history (no TTL, no max_history cap)",
)
def run(
    target: str,
    engine: str | None,
    state: str | None,
    ts: float | None,
    stream: bool,
    as_json: bool,
    output: str | None,
    progress: bool,
    keep_history: bool,
) -> None:
    """Run the pipeline TARGET (module:attribute) once, or stream it with --stream."""
    if (output or keep_history) and not stream:
        raise click.UsageError("--output and --keep-history go with --stream")
    if output and as_json:
        raise click.UsageError("--output writes the buckets; drop --json")
    pipeline = load_object(target)
    if stream and output:
        _stream_rows(pipeline, output, engine, state, progress, keep_history)
        return
    if stream:
        summary = pipeline.run(
            engine=engine, state=state, progress=progress, keep_history=keep_history or None
        )
        data = summary.to_dict() if hasattr(summary, "to_dict") else summary
    else:
        data = pipeline.execute(engine=engine, state=state, ts=ts)
    if as_json:
        click.echo(json.dumps(_jsonable(data), indent=2))
    else:
        for key, value in data.items() if isinstance(data, dict) else [("result", data)]:
            click.echo(f"{key}: {value!r}")


def _stream_rows(
    pipeline: Any,
    output: str,
    engine: str | None,
    state: str | None,
    progress: bool,
    keep_history: bool,
) -> None:
    """``run --stream --output``: rows on stdout as buckets become final, nothing else there."""
    from qmtl.outputs import RowWriter

    writer = RowWriter(sys.stdout, output)
    try:
        pipeline.run(
            writer,
            engine=engine,
            state=state,
            progress=progress,
            keep_history=keep_history or None,
        )
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as Unix tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON")
def plugins(as_json: bool) -> None:
    """List installed plugins, their distributions, versions and what they register."""
    from qmtl.plugins import load_plugins
    from qmtl.settings import load_settings

    settings = load_settings()
    loaded = load_plugins(autoload=settings.plugin_autoload, disabled=settings.disable_plugins)
    rows = [
        {
            "plugin": r.plugin,
            "distribution": r.distribution,
            "version": r.version,
            "category": r.category,
            "kind": r.kind,
            "description": r.description,
        }
        for r in loaded.registrations()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="QMTL plugins")
    for column in ("category", "kind", "distribution", "version", "plugin", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *(
                str(row[c] or "")
                for c in ("category", "kind", "distribution", "version", "plugin", "description")
            )
        )
    Console(width=140).print(table)


@cli.command()
@click.argument("target")
@click.option(
    "--format",
    "fmt",
    default="mermaid",
    show_default=True,
    type=click.Choice(["mermaid", "dot", "json", "svg", "png"]),
    help="Mermaid/DOT/JSON text, or SVG/PNG drawn by Graphviz's dot",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write to FILE instead of standard output (needed for png)",
)
def graph(target: str, fmt: str, output: str | None) -> None:
    """Draw the pipeline TARGET (module:attribute): nodes with tags and intervals, edges, and
    query nodes with their matches."""
    from qmtl.visualize import render

    pipeline = load_object(target)
    if fmt == "png" and output is None:
        raise click.UsageError("--format png writes a binary image: pass --output FILE")
    text = render(pipeline, format=fmt, path=output)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        click.echo(f"wrote {output}", err=True)


@cli.command()
@click.argument("target")
@click.argument("node")
@click.option("--interval", default="1d", show_default=True, help="Interval of the series")
@click.option("--count", type=int, default=10, show_default=True, help="Newest items to show")
@click.option("--start-ts", type=float, default=None, help="Only after this time (epoch s)")
@click.option("--end-ts", type=float, default=None, help="Only up to this time (epoch s)")
@click.option("--state", default=None, help="State backend kind (default: settings)")
@click.option("--redis-url", default=None, help="Read the Redis state backend at this URL")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON")
def history(
    target: str,
    node: str,
    interval: str,
    count: int,
    start_ts: float | None,
    end_ts: float | None,
    state: str | None,
    redis_url: str | None,
    as_json: bool,
) -> None:
    """Print NODE's history (newest first) from the state backend the pipeline TARGET is
    configured with (QMTL_STATE / qmtl.toml, or --state / --redis-url)."""
    from datetime import UTC, datetime

    pipeline = load_object(target)
    items = pipeline.get_history(
        node, interval, count, start_ts, end_ts, state=state, redis_uri=redis_url
    )
    if not items:
        _key, _spec, backend = pipeline._series("history", node, interval, state, redis_url)
        if getattr(backend, "in_process", False):
            raise click.ClickException(
                f"state backend '{backend.name}' keeps history inside the process that ran the "
                f"pipeline, and `qmtl history` is a new process, so there is none to show for "
                f"node '{node}'. Run the pipeline with a shared backend (--state redis, or "
                "QMTL_STATE=redis with QMTL_REDIS__URL) and read it back with "
                f"`qmtl history {target} {node} --state redis`"
            )
    if as_json:
        click.echo(json.dumps(_jsonable(items), indent=2))
        return
    if not items:
        meta = pipeline.get_node_metadata(node, interval, state=state, redis_uri=redis_url)
        click.echo(
            f"no history for node '{node}' at {interval} in state backend "
            f"'{meta['source']}' (pipeline '{pipeline.name}')"
        )
        return
    for item in items:
        when = datetime.fromtimestamp(item["timestamp"], UTC).isoformat().replace("+00:00", "Z")
        click.echo(f"{when}  {json.dumps(_jsonable(item['value']))}")


def build_cli() -> click.Group:
    """The root group with plugin commands added (``qmtl_register_commands``)."""
    from qmtl.plugins import create_plugin_manager, register_commands
    from qmtl.settings import load_settings

    settings = load_settings()
    pm = create_plugin_manager(autoload=settings.plugin_autoload, disabled=settings.disable_plugins)
    register_commands(pm, cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        root = build_cli()
    except QmtlError as error:
        click.secho(f"error: {error}", fg="red", err=True)
        raise SystemExit(1) from error
    root.main(args=argv, prog_name="qmtl")
